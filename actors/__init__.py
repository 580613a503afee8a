"""Ray actors: thin shells that hold a resource and forward to library code in `selfplay/`.

How they are called: the driver (``selfplay.loop``) calls ``actor.method.remote(...)``
and blocks on the refs with ``ray.get`` (through ``actors.group``) before the next
stage; actors never call each other and have no control flow of their own.  Weights
travel through Ray's object store, so nothing needs a shared filesystem.
"""
