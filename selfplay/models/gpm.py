"""General Preference representation Model (GPM), seed 004 section 4 and METHODS 2.2 / A.1.

Each (x, y) is embedded as a unit vector v in R^{2k}; preferences come from a
block skew-symmetric operator with k blocks [[0, -1], [1, 0]], each scaled by a
prompt-dependent eigenvalue lambda_l(x) >= 0 (the scale gate, softmax over the
k blocks):

    s(y_i > y_j | x) = <R(x) v_i, v_j> = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l])   (seed 004 eq. 4.2)

which is skew-symmetric (s(i, j) = -s(j, i), s(i, i) = 0).  P(y_i > y_j | x) =
sigmoid(s / tau).  We call ``s / tau`` the *score* (the preference log-odds of
seed 004 sec. 5), so ``sigmoid(score)`` is the probability.

Sign convention: eq. 4.2 and the published checkpoints (A.1, s = v_i^T R^T v_j)
agree; METHODS 2.2's ``v_i^T D R D v_j`` is the negative of both, and we follow
the paper's eq. 4.2.

Checkpoint layout (A.1): the base model's config; safetensors with the backbone
under ``model.``, ``value_head.weight`` [2k, hidden] and, with the gate,
``prompt_head.weight`` [k, hidden]; no biases.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, PretrainedConfig

from selfplay.modeling import ModelLoadError, resolve

GPM_META = "gpm_config.json"


def score_matrix(v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """S[i, j] = <R v_i, v_j> for v (K, 2k) and eigenvalues lam (k,).  Returns (K, K), skew-symmetric."""
    even, odd = v[:, 0::2], v[:, 1::2]  # (K, k) each
    return (even * lam) @ odd.T - (odd * lam) @ even.T


def pair_scores(v_i: torch.Tensor, v_j: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """s(y_i > y_j | x) row by row for v_i, v_j (B, 2k) and lam (B, k).  Returns (B,)."""
    return (lam * (v_i[:, 0::2] * v_j[:, 1::2] - v_i[:, 1::2] * v_j[:, 0::2])).sum(-1)


class GPM(nn.Module):
    """A causal-LM backbone with the GPM embedding head and optional scale gate."""

    def __init__(self, backbone: nn.Module, k: int, gate: bool = True, tau: float = 0.1):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.model = backbone
        self.k, self.gate, self.tau = k, gate, tau
        self.value_head = nn.Linear(hidden, 2 * k, bias=False)
        self.prompt_head = nn.Linear(hidden, k, bias=False) if gate else None

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings v (B, 2k) at the last non-pad token and eigenvalues lambda (B, k).

        Sequences are right-padded; ``prompt_len[b]`` is the length of the prompt
        part of sequence b, whose last token gives the gate's input.
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = attention_mask.sum(-1) - 1
        v = F.normalize(self.value_head(hidden[rows, last]).float(), dim=-1)
        if self.prompt_head is None:
            lam = torch.ones(hidden.shape[0], self.k, device=hidden.device)
        else:
            lam = torch.softmax(self.prompt_head(hidden[rows, prompt_len - 1]).float(), dim=-1)
        return v, lam

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        state = {f"model.{n}": t.contiguous() for n, t in self.model.state_dict().items()}
        state["value_head.weight"] = self.value_head.weight.contiguous()
        if self.prompt_head is not None:
            state["prompt_head.weight"] = self.prompt_head.weight.contiguous()
        save_file({n: t.detach().cpu() for n, t in state.items()}, str(path / "model.safetensors"))
        (path / GPM_META).write_text(json.dumps({"k": self.k, "gate": self.gate, "tau": self.tau}, indent=2))

    @classmethod
    def from_pretrained(cls, name: str, k: int | None = None, tau: float | None = None) -> "GPM":
        """Load our layout or the published one (A.1).  k defaults to the checkpoint's head size;
        a configured k that does not match the checkpoint is refused, never randomly initialised."""
        path = Path(resolve(name))
        if not path.is_dir():
            try:
                from huggingface_hub import snapshot_download

                path = Path(snapshot_download(name))
            except Exception as e:
                raise ModelLoadError(f"scorer model '{name}' is neither a local directory nor loadable from the hub: {e}") from e
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"scorer model '{name}' has no .safetensors weights in {path}")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        if "value_head.weight" not in state:
            raise ModelLoadError(f"scorer model '{name}' has no value_head.weight: not a GPM checkpoint")
        two_k = state["value_head.weight"].shape[0]
        if two_k % 2:
            raise ModelLoadError(f"scorer model '{name}': value_head.weight has {two_k} rows, expected an even 2k")
        if k is not None and 2 * k != two_k:
            raise ModelLoadError(f"scorer model '{name}' has value_head of size {two_k} (k={two_k // 2}) but scorer k={k}")
        gate = "prompt_head.weight" in state
        if gate and state["prompt_head.weight"].shape[0] != two_k // 2:
            raise ModelLoadError(
                f"scorer model '{name}': prompt_head.weight has {state['prompt_head.weight'].shape[0]} rows, expected k={two_k // 2}"
            )
        meta_path = path / GPM_META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        config = AutoConfig.from_pretrained(str(path))
        backbone = AutoModel.from_config(config)
        gpm = cls(backbone, k=two_k // 2, gate=gate, tau=tau if tau is not None else meta.get("tau", 0.1))
        backbone_state = {n[len("model."):]: t for n, t in state.items() if n.startswith("model.")}
        missing, unexpected = backbone.load_state_dict(backbone_state, strict=False)
        missing = [m for m in missing if "rotary" not in m]
        if missing:
            raise ModelLoadError(f"scorer model '{name}' lacks backbone weights: {missing[:5]}")
        gpm.value_head.weight.data.copy_(state["value_head.weight"])
        if gate:
            gpm.prompt_head.weight.data.copy_(state["prompt_head.weight"])
        return gpm
