"""Build (once) and cache the embedded world: tokenizer, SFT policy, prompts, preference models.

Everything is written as ordinary Hugging Face directories, so the run loads the
world through exactly the code that loads a user's model and data:

    <cache>/<key>/tokenizer/   trained with `tokenizers`, with a chat template
    <cache>/<key>/policy/      a tiny Llama after a short SFT warm start (+ tokenizer)
    <cache>/<key>/gpm/         a GPM trained on oracle-labelled pairs (+ tokenizer): the default scorer
    <cache>/<key>/bt/, pairwise/  the other kinds on the same pairs, trained the first time one is asked for
    <cache>/<key>/prompts.jsonl
    <cache>/<key>/pairs/train.jsonl, test.jsonl   the oracle-labelled pairs (TRL prompt/chosen/rejected)
    <cache>/<key>/attributes/train.jsonl, test.jsonl   oracle attribute labels, 0-100, some missing (first use)
    <cache>/<key>/multi_objective/   a multi-objective reward model on them (first use)
    <cache>/<key>/sft.jsonl    (prompt, response) rows from the SFT distribution: DPA's memory replay (first use)
    <cache>/<key>/steerable_policy/   the policy after a direction-conditioned warm start: the pi_0 of runs
                               with directions in the system prompt ([DPA]'s SteerLM role; first use)
    <cache>/<key>/world.json   settings, timings, GPM held-out accuracy

The key hashes the world settings, so changing one builds a new world.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from selfplay.core.checkpoint import atomic_write_json, atomic_write_text, build_once
from selfplay.core.lm import load_causal_lm, load_tokenizer
from selfplay.data.pairs import PreferencePair, load_pairs, write_pairs_jsonl
from selfplay.models import KINDS
from selfplay.world import corpus, oracle
from selfplay.world.rows import (
    attribute_row,
    corpus_batch,
    labelled_pairs,
    steered_batch,
)
from selfplay.world.sft import sft
from selfplay.world.tokenizer import train_tokenizer

if TYPE_CHECKING:  # the model classes (~2 s to import) only where a part is built: a cached world is read without
    from transformers import LlamaForCausalLM

log = logging.getLogger(__name__)


WORLD_VERSION = 3  # 3: the GPM reads its authors' input layout (models.gpm.encode_published)
# The WorldConfig sections of parts built on first use: left out of the world's key, each keys its own part.
LAZY_PARTS = ("steerable", "attributes", "sft_data")


def settings_key(settings: DictConfig | dict, drop: tuple[str, ...] = ()) -> str:
    """A short hash of resolved settings (without the keys in ``drop``): the name of what they build."""
    plain = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else dict(settings)
    blob = json.dumps({k: v for k, v in plain.items() if k not in drop}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class World:
    root: Path
    policy: str
    tokenizer: str
    gpm: str
    prompts: str
    pairs: str  # directory with train.jsonl and test.jsonl

    @classmethod
    def at(cls, root: Path) -> World:
        return cls(root, str(root / "policy"), str(root / "tokenizer"), str(root / "gpm"), str(root / "prompts.jsonl"),
                   str(root / "pairs"))

    def prompt_texts(self) -> list[str]:
        """The prompts of prompts.jsonl as plain strings."""
        with open(self.prompts) as f:
            return [json.loads(line)["prompt"] for line in f]

    def part(self, name: str, cfg: DictConfig) -> Path:
        """Where the part ``name`` built on first use from the settings section ``cfg[name]`` lives."""
        return self.root / f"{name}-{settings_key(cfg[name])}"

    def attribute_data(self, cfg: DictConfig) -> str:
        """A directory with train.jsonl and test.jsonl: HelpSteer-style rows (prompt, response, one column per
        oracle attribute on 0-100, each label missing with probability ``cfg.attributes.missing_share``);
        written on first use."""
        path, a = self.part("attributes", cfg), cfg.attributes

        def write(tmp: Path) -> None:
            rng = random.Random(f"{self.root.name}/attributes")
            prompts = self.prompt_texts()
            for split, n in (("train", a.train_rows), ("test", a.test_rows)):
                with open(tmp / f"{split}.jsonl", "w") as f:
                    f.writelines(json.dumps(attribute_row(prompts, rng, a.missing_share)) + "\n" for _ in range(n))

        build_once(path, write)
        return str(path)

    def sft_data(self, cfg: DictConfig) -> str:
        """sft.jsonl: ``cfg.sft_data.rows`` (prompt, response) rows drawn like the SFT warm start's; written on
        first use."""
        path = self.part("sft_data", cfg) / "sft.jsonl"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            rng = random.Random(f"{self.root.name}/sft")
            prompts = self.prompt_texts()
            rows = []
            for _ in range(cfg.sft_data.rows):
                p = rng.choice(prompts)
                rows.append(json.dumps({"prompt": p, "response": corpus.sample_response(p, rng)}) + "\n")
            atomic_write_text(path, "".join(rows))
        return str(path)

    def steerable_policy(self, cfg: DictConfig) -> str:
        """The policy after a direction-conditioned warm start (``train_steerable_policy``); trained on first use."""
        path = self.part("steerable", cfg)

        def train(tmp: Path) -> None:
            log.info("training the embedded world's steerable warm start (once; cached; %d steps)", cfg.steerable.steps)
            train_steerable_policy(self, cfg, tmp)

        build_once(path, train)
        return str(path)

    def scorer(self, kind: str, cfg: DictConfig) -> str:
        """The world's preference model of ``kind``; all but the GPM are trained on first use (and cached)."""
        if kind not in KINDS:
            raise ValueError(f"unknown preference-model kind '{kind}'; expected one of {KINDS}")
        # the multi-objective model is trained on the attribute rows: it lives beside them, keyed by their settings
        path = Path(self.attribute_data(cfg)) / kind if kind == "multi_objective" else self.root / kind

        def train(tmp: Path) -> None:
            log.info("training the embedded world's %s preference model (once; cached)", kind)
            if kind == "multi_objective":
                train_world_attribute_model(self, cfg, tmp)
            else:
                train_world_scorer(kind, self, cfg, tmp)

        build_once(path, train)
        return str(path)


def world_key(cfg: DictConfig) -> str:
    """The cache key of the world these settings build (the parts built on first use keyed apart)."""
    return settings_key({"version": WORLD_VERSION, **OmegaConf.to_container(cfg, resolve=True)},
                        drop=("cache_dir", *LAZY_PARTS))


def get_world(cfg: DictConfig) -> World:
    """The cached world for these settings, built first if absent."""
    root = Path(cfg.cache_dir).expanduser() / world_key(cfg)

    def build(tmp: Path) -> None:
        log.info("building the embedded world in %s (once; cached)", root)
        build_world(cfg, tmp)

    build_once(root, build, done=(root / "world.json").exists)
    return World.at(root)


def build_world(cfg: DictConfig, root: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    timings = {}

    prompts = corpus.make_prompts(cfg.n_prompts, rng)
    with open(root / "prompts.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": p}) + "\n" for p in prompts)

    texts = prompts + [corpus.sample_response(rng.choice(prompts), rng) for _ in range(4000)] + corpus.vocabulary_text()
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    tokenizer.save_pretrained(root / "tokenizer")
    tokenizer = load_tokenizer(str(root / "tokenizer"))
    timings["tokenizer_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    policy = LlamaForCausalLM(config)
    sft_losses = sft(policy, tokenizer, lambda: corpus_batch(prompts, cfg.sft_batch_size, rng), cfg.sft_steps, cfg.sft_lr)
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    timings["sft_s"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = labelled_pairs(prompts, cfg.pm_pairs, rng, cfg.length_by_kind)
    held_out = labelled_pairs(prompts, 500, rng, cfg.length_by_kind)
    write_pairs_jsonl(root / "pairs" / "train.jsonl", pairs)
    write_pairs_jsonl(root / "pairs" / "test.jsonl", held_out)
    pm = train_world_scorer("gpm", World.at(root), cfg, root / "gpm", policy=policy, pairs=(pairs, held_out))
    timings["gpm_s"] = time.perf_counter() - t

    timings["total_s"] = time.perf_counter() - t0
    info = {
        "version": WORLD_VERSION,
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "timings": timings,
        "sft_loss_first_last": [sft_losses[0], sft_losses[-1]],
        "gpm_loss_first_last": [pm["losses"][0], pm["losses"][-1]],
        "gpm_heldout_accuracy": pm["heldout_accuracy"],
    }
    atomic_write_json(root / "world.json", info)
    log.info("world built in %.1fs: %s", timings["total_s"], json.dumps(info["timings"]))


def train_world_scorer(
    kind: str, world: World, cfg: DictConfig, out: Path,
    policy: LlamaForCausalLM | None = None, pairs: tuple[list[PreferencePair], list[PreferencePair]] | None = None,
) -> dict:
    """Train a ``kind`` preference model from the SFT policy on the world's labelled pairs; save it to ``out``.

    Every kind gets the same backbone, pairs, steps, batch and learning rate.
    """
    from transformers import AutoModel

    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.models.training import pair_accuracy, train_preference_model

    t = time.perf_counter()
    tokenizer = load_tokenizer(world.tokenizer)
    if pairs is None:
        pairs = tuple(load_pairs(str(Path(world.pairs) / f"{split}.jsonl"), max_bad_share=0.0)[0] for split in ("train", "test"))
    if policy is None:
        backbone = load_backbone(world.policy)
    else:  # a reward model starts from the SFT policy
        backbone = AutoModel.from_config(policy.config)
        backbone.load_state_dict(policy.model.state_dict())
    model = new_preference_model(kind, backbone, k=cfg.gpm_k, gate=True, tau=0.1)
    losses = train_preference_model(model, tokenizer, pairs[0], cfg.pm_steps, cfg.pm_batch_size, cfg.pm_lr, cfg.seed)
    accuracy = pair_accuracy(model, tokenizer, pairs[1])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {"kind": kind, "losses": losses, "heldout_accuracy": accuracy, "seconds": time.perf_counter() - t}
    atomic_write_json(out / "train_report.json", {k: v for k, v in report.items() if k != "losses"})
    log.info("world %s: held-out pair accuracy %.3f (%.0fs)", kind, accuracy, report["seconds"])
    return report


def train_world_attribute_model(world: World, cfg: DictConfig, out: Path) -> dict:
    """The multi-objective reward model (docs/methods.md §2.3) from the SFT policy on the world's attribute rows
    (``World.attribute_data``, already on 0-100), with the pair kinds' steps, batch and learning rate."""
    from selfplay.data.attributes import load_attribute_rows
    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.models.training import regression_report, train_attribute_model

    t = time.perf_counter()
    tokenizer = load_tokenizer(world.tokenizer)
    data = Path(world.attribute_data(cfg))
    train, names, _ = load_attribute_rows(str(data / "train.jsonl"), attributes=list(oracle.ATTRIBUTES), max_bad_share=0.0)
    test, _, _ = load_attribute_rows(str(data / "test.jsonl"), attributes=names, max_bad_share=0.0)
    model = new_preference_model("multi_objective", load_backbone(world.policy), attributes=names)
    losses = train_attribute_model(model, tokenizer, train, cfg.pm_steps, cfg.pm_batch_size, cfg.pm_lr, cfg.seed)
    report = {"kind": "multi_objective", "held_out": regression_report(model, tokenizer, test, 64),
              "loss_first_last": [losses[0], losses[-1]], "seconds": time.perf_counter() - t}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / "train_report.json", report)
    log.info("world multi_objective: held-out %s (%.0fs)", json.dumps(report["held_out"]["attributes"]), report["seconds"])
    return report


def train_steerable_policy(world: World, cfg: DictConfig, out: Path) -> dict:
    """The SFT policy after ``cfg.steerable.steps`` steps on ``steered_batch`` rows, saved to ``out`` with its tokenizer
    and the attributes its directions range over: a pi_0 that already reads the direction in its system prompt,
    as [DPA]'s first iteration samples from a SteerLM model."""
    from selfplay.steering.directional import save_attributes

    t = time.perf_counter()
    rng = random.Random(f"{world.root.name}/steerable")
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(world.policy)
    policy = load_causal_lm(world.policy)
    prompts = world.prompt_texts()
    st = cfg.steerable
    draw = lambda: steered_batch(prompts, cfg.sft_batch_size, rng, tuple(st.angles), st.candidates)
    losses = sft(policy, tokenizer, draw, st.steps, st.lr)
    policy.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_attributes(out, oracle.ATTRIBUTES)
    report = {"steps": st.steps, "angles": list(st.angles), "candidates": st.candidates,
              "loss_first_last": [losses[0], losses[-1]], "seconds": time.perf_counter() - t}
    atomic_write_json(out / "train_report.json", report)
    log.info("world steerable warm start: loss %.3f -> %.3f (%.0fs)", losses[0], losses[-1], report["seconds"])
    return report
