"""What the three preference models share: a causal-LM backbone, batching, and checkpoints.

Every preference model here is ``model`` (the base model of any causal-LM
checkpoint, e.g. ``LlamaModel``) plus small bias-free linear heads.  A checkpoint
is a Hugging Face directory: the base model's config, one safetensors file with
the backbone under ``model.`` and the heads under their own names, the tokenizer,
and ``preference_model.json`` naming the kind (absent from published GPM and
reward-model checkpoints, whose kind is read from their heads).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from selfplay.core.lm import (PICKLE_WEIGHTS, Messages, ModelLoadError, ModelTrust, encode_exchange, pad_sequences,
                              resolve)
from selfplay.models.preference_losses import preference_nll

META_FILE = "preference_model.json"
HEADER_LIMIT = 100 << 20  # safetensors' own bound on a header's size


def load_backbone(name: str, dtype: torch.dtype = torch.float32, trust: ModelTrust = ModelTrust()) -> nn.Module:
    """The base model (no LM head) of the causal-LM checkpoint ``name``: where a preference model starts."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a causal LM's lm_head is expected to be left out: no load report
    try:
        return AutoModel.from_pretrained(resolve(name), dtype=dtype, **trust.hf_kwargs())
    except Exception as e:  # transformers raises OSError, ValueError, hub errors...
        raise ModelLoadError(f"backbone '{name}' could not be loaded as a Hugging Face model: {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state (B, H) at the last non-pad position of each right-padded row of (B, T, H)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, attention_mask.sum(-1) - 1]


def at_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Hidden state (B, H) at ``positions[b]`` of each row of (B, T, H)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def batched(seqs: list[list[int]], tokenizer: PreTrainedTokenizerBase, batch_size: int, device: torch.device):
    """Yield ``(start, ids, attention_mask)`` for consecutive right-padded chunks of ``seqs``."""
    for start in range(0, len(seqs), batch_size):
        ids, mask = pad_sequences(seqs[start:start + batch_size], tokenizer.pad_token_id)
        yield start, ids.to(device), mask.to(device)


Encode = Callable[[PreTrainedTokenizerBase, Messages, str], tuple[list[int], int]]


def encode_responses(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]],
    encode: Encode = encode_exchange,
) -> tuple[list[list[int]], list[int]]:
    """Token ids of every (prompt, response) as ``encode`` writes them (by default the templated prompt with its
    generation header, the response and EOS), prompt-major, and each one's prompt length."""
    seqs, prompt_lens = [], []
    for msgs, group in zip(prompts, responses):
        for r in group:
            ids, n = encode(tokenizer, msgs, r)
            seqs.append(ids)
            prompt_lens.append(n)
    return seqs, prompt_lens


def save_checkpoint(
    path: str | Path, backbone: nn.Module, heads: dict[str, torch.Tensor], meta: dict[str, Any],
    config: PretrainedConfig | None = None,
) -> None:
    """Write config, ``model.safetensors`` (``model.*`` + heads) and ``preference_model.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (config or backbone.config).save_pretrained(path)
    state = {f"model.{n}": t for n, t in backbone.state_dict().items()}
    state.update(heads)
    save_file({n: t.detach().contiguous().cpu() for n, t in state.items()}, str(path / "model.safetensors"))
    (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_checkpoint(name: str, what: str,
                    allow_pickle: bool = False) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """The local directory of ``name`` (downloaded if a hub name), its tensors, and its meta (or {}).  The
    tensors come from its safetensors files; from its ``pytorch_model*.bin`` only where it has none and
    ``allow_pickle`` (``scorer.allow_pickle``) says so."""
    path = Path(resolve(name))
    if not path.is_dir():
        if path.exists() or name.startswith((".", "/", "~")):
            raise ModelLoadError(f"{what} '{name}' is not a directory")
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(name))
        except Exception as e:
            raise ModelLoadError(f"{what} '{name}' is neither a local directory nor loadable from the hub: {e}") from e
    files, pickled = sorted(path.glob("*.safetensors")), sorted(path.glob(PICKLE_WEIGHTS))
    if not files and not (pickled and allow_pickle):
        hint = f" (its {pickled[0].name} is pickle: scorer.allow_pickle=true loads it)" if pickled else ""
        raise ModelLoadError(f"{what} '{name}' has no .safetensors weights in {path}{hint}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    if not files:  # allow_pickle: torch's restricted unpickler (weights_only), as transformers reads them
        for f in pickled:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return path, state, meta


def backbone_from_state(path: Path, state: dict[str, torch.Tensor], what: str,
                        trust_remote_code: bool = False, dtype: torch.dtype = torch.float32,
                        prefix: str = "model.", config: PretrainedConfig | None = None) -> nn.Module:
    """The base model described by ``config`` (default: ``path``'s config.json), with the ``prefix`` tensors of
    ``state`` (``model.*`` in our and the GPM's layout, ``pretrained_model.*`` in PairRM's), built in ``dtype``
    (``scorer.dtype``) so that no float32 copy of a bf16 checkpoint is ever held."""
    if config is None:
        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except Exception as e:
            raise ModelLoadError(f"{what} '{path}' has no usable config.json: {e}") from e
    backbone = AutoModel.from_config(config, trust_remote_code=trust_remote_code, dtype=dtype)
    weights = {n[len(prefix):]: t for n, t in state.items() if n.startswith(prefix)}
    try:
        missing, _ = backbone.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # torch: "size mismatch for <name>: ... shape ... in current model is ..."
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:3])
        raise ModelLoadError(f"{what} '{path}': backbone weights of other shapes than its config says: {detail}") from e
    missing = [m for m in missing if "rotary" not in m]
    if missing:
        raise ModelLoadError(f"{what} '{path}' lacks backbone weights: {missing[:5]}")
    return backbone


def safetensors_header(path: Path) -> dict[str, list[int]]:
    """The tensor names and shapes in one safetensors file, from its header alone (an 8-byte little-endian
    length, then that many bytes of JSON): no tensor is read, so a 16 GB shard costs a few kilobytes."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= HEADER_LIMIT:
            raise ModelLoadError(f"'{path}' is not a safetensors file (its header length reads {size})")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"'{path}' is not a safetensors file (its header is not JSON: {e})") from None
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def checkpoint_tensors(path: Path) -> dict[str, list[int]]:
    """The names and shapes of every tensor in the safetensors files of the directory ``path``, every shard
    included (those ``model.safetensors.index.json`` lists, and any other ``*.safetensors`` beside them)."""
    files = set(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.exists():
        files |= {path / shard for shard in set(json.loads(index.read_text()).get("weight_map", {}).values())}
    tensors: dict[str, list[int]] = {}
    for f in sorted(files):
        if not f.exists():
            raise ModelLoadError(f"'{path}': {index.name} lists {f.name}, which is not there")
        tensors.update(safetensors_header(f))
    return tensors


def tensor_shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """name -> shape of loaded tensors: what ``PreferenceModel.head_problem`` reads, as from safetensors headers."""
    return {n: list(t.shape) for n, t in state.items()}


def check_kind(meta: dict[str, Any], expected: str, name: str, required: bool = False) -> None:
    """Refuse a checkpoint whose recorded kind is not the one asked for (or, if ``required``, is not recorded)."""
    kind = meta.get("kind")
    if kind is None and required:
        raise ModelLoadError(f"scorer model '{name}' has no {META_FILE} saying it is a '{expected}' model")
    if kind is not None and kind != expected:
        raise ModelLoadError(f"scorer model '{name}' is a '{kind}' checkpoint, not '{expected}': set scorer.kind={kind}")


class PreferenceModel(nn.Module):
    """The interface every preference model offers: the training loss, and the scorer's K x K matrices.

    Scores are preference log-odds: ``sigmoid(S[i, j]) = P(y_i > y_j | x)``.
    """

    kind: str = ""
    head_tensors: tuple[str, ...] = ()  # what its loader reads besides ``model.*``: preflight checks the headers

    @classmethod
    def head_problem(cls, tensors: dict[str, list[int]]) -> str | None:
        """What a checkpoint with these tensors (name -> shape, from its safetensors headers) lacks for this kind,
        or None when its loader can read it."""
        missing = [t for t in cls.head_tensors if t not in tensors]
        return f"has no {', '.join(missing)}" if missing else None

    def encode(self, tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str) -> tuple[list[int], int]:
        """The ids this model reads for (prompt, response), and the prompt's length: the templated prompt with its
        generation header, the response, EOS (``encode_exchange``); the GPM reads its authors' layout instead."""
        return encode_exchange(tokenizer, messages, response)

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.model = backbone

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list) -> torch.Tensor:
        """Log-odds that each pair's chosen response beats its rejected one.  Returns (B,), differentiable."""
        raise NotImplementedError

    def pair_loss(self, tokenizer: PreTrainedTokenizerBase, pairs: list) -> torch.Tensor:
        """-log P(chosen > rejected) per pair (docs/methods.md §2.1 / 2.2).  Returns (B,)."""
        return preference_nll(self.pair_logits(tokenizer, pairs))

    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list, responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        """One (K, K) log-odds matrix per prompt, skew-symmetric with a zero diagonal; K may vary."""
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        raise NotImplementedError
