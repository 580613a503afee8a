"""The embedded world's part of the run's config schema (``world.*``): its sizes, seeds and the parts built on
first use."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SteerableSettings:
    """The world's steerable warm start (DPA's pi_0), trained on first use: SFT on the best of ``candidates``
    labelled responses by v^T r, v at an angle drawn uniformly in ``angles`` (degrees).  A 2-layer policy needs
    ~1500 steps to read the weights' magnitudes, not just their sign."""

    steps: int = 1500
    lr: float = 1e-3
    angles: list[float] = field(default_factory=lambda: [-45.0, 45.0])
    candidates: int = 8


@dataclass
class AttributeRowSettings:
    """The world's HelpSteer-style attribute rows (written on first use; the multi-objective scorer's data)."""

    train_rows: int = 4000
    test_rows: int = 500
    missing_share: float = 0.1  # each label is dropped with this probability (never both): the RM must mask them


@dataclass
class SFTDataSettings:
    """The world's sft.jsonl (written on first use; DPA's memory replay): rows drawn like the SFT warm start's."""

    rows: int = 2000


@dataclass
class WorldConfig:
    """The embedded world: tokenizer, tiny Llama policy, prompts, oracle and its GPM.  The parts built on
    first use (``steerable``, ``attributes``, ``sft_data``) are cached under keys of their own settings, so
    changing one of those rebuilds that part only."""

    cache_dir: str = "~/.cache/selfplay/world"
    seed: int = 0
    n_prompts: int = 1024
    # policy size (head_dim = hidden / heads must be 64 for vLLM's CPU attention)
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 1024
    # the oracle's log-odds weight on verbosity by prompt kind: "Explain {} briefly." prompts prefer short answers,
    # the others thorough ones (selfplay.world.oracle.length_weight); 0: length is not rewarded (the default)
    length_by_kind: float = 0.0
    sft_steps: int = 300
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    # the preference models (GPM: the default scorer; bt and pairwise on first use), on oracle-labelled pairs
    gpm_k: int = 2
    pm_pairs: int = 6000
    pm_steps: int = 400
    pm_batch_size: int = 32
    pm_lr: float = 2e-3
    steerable: SteerableSettings = field(default_factory=SteerableSettings)
    attributes: AttributeRowSettings = field(default_factory=AttributeRowSettings)
    sft_data: SFTDataSettings = field(default_factory=SFTDataSettings)
