"""What the driver checks of the run's models and directory before any actor loads a model, from configs and file listings.

Without these, a policy whose tokenizer has more tokens than its embedding has rows runs until an actor dies with
``IndexError: index out of range in self``, and a scorer directory without weights fails inside the scorer
actor's start-up.  Each check raises one ``ModelLoadError`` or ``RunError`` naming the model or directory and
the problem; the entry point prints it in one line and exits with code 2, as for a config error.
"""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from selfplay.core.lm import PICKLE_WEIGHTS as READ_PICKLE
from selfplay.core.lm import ModelLoadError, ModelTrust, resolve
from selfplay.loop.sources import RunError, Sources

SAFE_WEIGHTS = "*.safetensors"
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")  # torch.load's formats: unpickling can run code


def local_directory(name: str) -> Path | None:
    """``name`` as a local directory, or None for a hub name (the loaders download and check those)."""
    path = Path(resolve(name))
    return path if path.is_dir() else None


def check_weights(name: str, role: str, allow_pickle: bool) -> None:
    """A local model directory holds safetensors weights; pickle-only weights are refused, never unpickled,
    unless ``{role}.allow_pickle`` opts in."""
    path = local_directory(name)
    if path is None or any(path.glob(SAFE_WEIGHTS)):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
    if allow_pickle and any(path.glob(READ_PICKLE)):
        return
    if pickled and allow_pickle:  # e.g. a bare model.pt: the loaders would find no weights inside Ray
        raise ModelLoadError(f"{role} model '{name}' has pickle weights ({', '.join(pickled)}) but none the loaders "
                             f"read: with {role}.allow_pickle they read {READ_PICKLE} (transformers' names)")
    if pickled:
        raise ModelLoadError(f"{role} model '{name}' has only pickle weights ({', '.join(pickled)}); selfplay loads "
                             "safetensors only (unpickling runs code): convert them with transformers' "
                             f"save_pretrained, or set {role}.allow_pickle=true to load them if you trust the files")
    raise ModelLoadError(f"{role} model '{name}' has no weights: no {SAFE_WEIGHTS} file in {path}"
                         + (f" (nor {', '.join(PICKLE_WEIGHTS)})" if allow_pickle else ""))


# The auto classes the scorer's loaders resolve: every kind builds its base model from config.json's model_type
# (AutoConfig, AutoModel) and reads its heads from the safetensors itself, so a class mapped for any other auto
# class (ArmoRM's AutoModelForSequenceClassification) is code no loader of ours imports.
SCORER_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoTokenizer")


def check_code(name: str, role: str, trust_remote_code: bool, resolved: tuple[str, ...] | None = None) -> None:
    """A local model whose config.json maps its classes to its own Python files (``auto_map``) is refused:
    loading it would run that code (transformers' ``trust_remote_code``), unless ``{role}.trust_remote_code``
    opts in.  ``resolved``: the auto classes the role's loaders resolve, where only those entries would run
    (None: every entry counts)."""
    path = local_directory(name)
    config = path / "config.json" if path is not None else None
    if trust_remote_code or config is None or not config.exists():
        return
    try:
        mapped = json.loads(config.read_text()).get("auto_map")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ModelLoadError(f"{role} model '{name}': config.json is not a JSON object: {e}") from e
    if mapped and resolved is not None:
        mapped = {auto: target for auto, target in mapped.items() if auto in resolved}
    if mapped:
        raise ModelLoadError(f"{role} model '{name}' ships its own Python code (auto_map: "
                             f"{', '.join(sorted(mapped))}); selfplay does not run a model's code unless asked: set {role}.trust_remote_code=true "
                             "if you trust it")


def embedding_rows(name: str, what: str, trust_remote_code: bool) -> int | None:
    """The vocabulary size in a local model's config.json (the rows of its token embedding), or None."""
    from transformers import AutoConfig

    if local_directory(name) is None:
        return None
    try:
        config = AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError on an unknown model_type...
        raise ModelLoadError(f"{what} '{name}' has no usable config.json: {str(e).splitlines()[0]}") from e
    return getattr(config.get_text_config(), "vocab_size", None)


def check_vocabulary(name: str, tokenizer_name: str, what: str, trust_remote_code: bool) -> None:
    """Every id the tokenizer can produce indexes a row of the model's embedding."""
    from transformers import AutoTokenizer

    rows = embedding_rows(name, what, trust_remote_code)
    if rows is None:
        return
    try:
        tokens = len(AutoTokenizer.from_pretrained(resolve(tokenizer_name), trust_remote_code=trust_remote_code))
    except Exception as e:
        raise ModelLoadError(f"{what} tokenizer '{tokenizer_name}' could not be loaded: {str(e).splitlines()[0]}") from e
    if tokens > rows:
        raise ModelLoadError(f"{what} '{name}' embeds {rows} tokens but its tokenizer '{tokenizer_name}' has {tokens}: "
                             f"ids from {rows} up would index past the embedding; use the tokenizer the model was "
                             "trained with")


def check_heads(name: str, kind: str) -> None:
    """A local scorer's safetensors (every shard) hold the heads ``kind``'s loader reads, from their headers alone;
    refused in one line naming the head tensors found (``models.kinds.check_heads``)."""
    from selfplay.models.backbone import checkpoint_tensors
    from selfplay.models.kinds import check_heads as refuse_unreadable

    path = local_directory(name)
    if path is None or not any(path.glob(SAFE_WEIGHTS)):  # a hub name, or pickle weights: the loader checks them
        return
    refuse_unreadable(kind, name, checkpoint_tensors(path))


def check_scorer(name: str, cfg: DictConfig) -> None:
    """The scorer's code and heads, before its config is read for anything else (its attributes, for the
    directions); its weights' presence and format come with the policy's (``check_models``)."""
    trust = ModelTrust.of(cfg.scorer)
    check_code(name, "scorer", trust.trust_remote_code, SCORER_AUTO_CLASSES)
    check_heads(name, cfg.scorer.kind)


def check_models(sources: Sources, cfg: DictConfig) -> None:
    """Both models' weights, the policy's code (the scorer's: ``check_scorer``, earlier) and both vocabularies,
    from their local files, before any actor loads a model; ``cfg.policy`` and ``cfg.scorer`` say what each model may
    load (``ModelTrust``)."""
    for model, tokenizer, role in ((sources.policy, sources.policy_tokenizer, "policy"),
                                   (sources.scorer, sources.scorer_tokenizer, "scorer")):
        trust = ModelTrust.of(cfg[role])
        check_weights(model, role, trust.allow_pickle)
        if role == "policy":
            check_code(model, role, trust.trust_remote_code)
        if not (role == "scorer" and cfg.scorer.kind == "pairrm"):  # LLM-Blender's RankerConfig reads as another
            check_vocabulary(model, tokenizer, f"{role} model", trust.trust_remote_code)  # model: its loader checks
    check_tensor_parallel(sources.policy, cfg)


def check_tensor_parallel(name: str, cfg: DictConfig) -> None:
    """``generator.tensor_parallel`` > 1 fits the policy's heads (a local config.json's) and, for an engine on
    the CPU, this machine's cores (``selfplay.policy.tensor_parallel``); refused in one line, before any actor loads a model."""
    import os

    from selfplay.policy.tensor_parallel import tensor_parallel_problems

    g = cfg.generator
    if g.backend != "vllm" or g.tensor_parallel == 1:
        return
    path = local_directory(name)
    config = json.loads((path / "config.json").read_text()) if path and (path / "config.json").exists() else {}
    text = config.get("text_config", config)
    cpus = len(os.sched_getaffinity(0)) if g.num_gpus == 0 else None
    problems = tensor_parallel_problems(g.tensor_parallel, text.get("num_attention_heads"),
                                        text.get("num_key_value_heads"), cpus)
    if problems:
        raise RunError(f"policy model '{name}': {problems[0]}")


def check_writable(run_dir: Path) -> None:
    """``run_dir`` (created if absent) takes a new file: a read-only or full disk is found before any work."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        why = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.ENOSPC: "disk full",
               errno.EPERM: "not permitted"}.get(e.errno, e.strerror or str(e))
        raise RunError(f"run.dir {run_dir} is not writable ({why}); choose another run.dir") from e
