"""Latent Preference Coding ([LPC], sec. 3.3; docs/methods.md §6): a discrete codebook beside the policy,
sharing its backbone.

- ``LatentCodes``: the codebook E = {e_1..e_C} in R^d (d the policy's hidden size), the prior network
  p(z|x) = softmax(MLP_prior(h_x)) (eq. 10) and the posterior network
  q(z|x, y_w > y_l) = softmax(MLP_post([h_{x,y_w}; h_{x,y_l}])) (eq. 9), each a two-layer MLP.
- ``mixture``: c = g GumbelSoftmax(p) + (1 - g) GumbelSoftmax(q) and z = sum_k c_k e_k (eq. 12).
- ``conditioned_logprobs``: log pi_theta(y|x, z) = sum_t log softmax(LMHead(h_{x,y<t} + z)) over the response
  tokens (eq. 11), with h_x and h_{x,y} (the last prompt token's and the last token's final states) from the same
  backbone pass, so a pair costs two backbone passes, as in DPO.
- ``save`` / ``load``: the heads beside a Hugging Face checkpoint, ``lpc.safetensors`` and ``lpc.json``.
- serving z: without a bias in the LM head, LMHead(h + z) = W h + W z, so adding z to every final state equals
  adding the vector W z to every position's logits (``logit_bias``).  With z = sum_k c_k e_k that is
  c @ W E: the generators keep the C x V table W E (``code_table``, sent after each training) and each prompt
  brings its C code weights (``prompt_weights``), so a request carries C numbers, not V.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from selfplay.core.lm import pad_sequences

WEIGHTS, SETTINGS = "lpc.safetensors", "lpc.json"


class LatentCodes(nn.Module):
    def __init__(self, hidden: int, codes: int, mlp_hidden: int | None = None, init_std: float = 1.0):
        super().__init__()
        if codes < 1:
            raise ValueError(f"LPC needs at least one code, got {codes}")
        width = mlp_hidden or hidden
        self.hidden, self.codes, self.width = hidden, codes, width
        # N(0, init_std^2) entries, nn.Embedding's default at 1: codes of the final states' scale.  A codebook at
        # zero (init_std = 0) starts pi(.|x, z) as the policy but, at the policy's learning rate, barely leaves
        # zero (norm 0.02 against the states' 12.5 after three world iterations): LPC would be DPO.
        self.codebook = nn.Parameter(init_std * torch.randn(codes, hidden))
        self.prior = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, codes))
        self.posterior = nn.Sequential(nn.Linear(2 * hidden, width), nn.GELU(), nn.Linear(width, codes))

    def prior_logits(self, h_x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, C): the prior's logits, eq. 10."""
        return self.prior(h_x)

    def posterior_logits(self, h_w: torch.Tensor, h_l: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, d) -> (B, C): the posterior's logits given y_w > y_l, eq. 9."""
        return self.posterior(torch.cat([h_w, h_l], dim=-1))

    def embed(self, weights: torch.Tensor) -> torch.Tensor:
        """z = sum_k c_k e_k: (B, C) weights -> (B, d)."""
        return weights @ self.codebook


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gumbel-softmax sample (Jang et al. 2017): softmax((logits + G) / tau), G ~ Gumbel(0, 1) i.i.d.; drawn from
    ``generator`` so that a run's samples are reproducible."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device="cpu").to(logits.device)
    exponential = (-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20)  # Exp(1); its -log is Gumbel(0, 1)
    gumbel = -torch.log(exponential)
    return F.softmax((logits + gumbel) / tau, dim=-1)


def mixture(prior_logits: torch.Tensor, posterior_logits: torch.Tensor, g: float, tau: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """c = g GumbelSoftmax(p(z|x)) + (1 - g) GumbelSoftmax(q(z|x, y_w > y_l)), [LPC] eq. 12: (B, C) each.
    The prior's sample is drawn first, then the posterior's, from the one ``generator``."""
    from_prior = gumbel_softmax(prior_logits, tau, generator)
    from_posterior = gumbel_softmax(posterior_logits, tau, generator)
    return g * from_prior + (1.0 - g) * from_posterior


def mixing_weight(step: int, total: int) -> float:
    """g, rising linearly from 0 at the first step to 1 at the last ([LPC] sec. 3.3)."""
    return 1.0 if total <= 1 else min(max(step / (total - 1), 0.0), 1.0)


def final_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The backbone's last-layer states after its final norm, the LM head's input: (B, T, d).  The backbone
    alone runs (``get_decoder``), so the vocabulary projection is paid once, with z, in ``conditioned_logprobs``."""
    return model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def conditioned_logprobs(model: nn.Module, states: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                         z: torch.Tensor) -> torch.Tensor:
    """log pi_theta(y|x, z) = sum over response tokens of log softmax(LMHead(h + z)), [LPC] eq. 11: ``states``
    (B, T, d) from ``final_states``, ``z`` (B, d) added at every position; prompt tokens masked by ``loss_mask``.
    Returns (B,)."""
    head = model.get_output_embeddings()
    logits = head(states[:, :-1] + z[:, None, :].to(states.dtype))
    token_logps = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logps * loss_mask[:, 1:]).sum(-1)


def last_positions(loss_mask: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the index of the last prompt token (just before the first response token) and of the last
    token (x, y): where h_x and h_{x,y} are read.  Right-padded rows."""
    first_response = loss_mask.float().argmax(dim=1)
    return first_response - 1, attention_mask.sum(dim=1) - 1


def prompt_weights(codes: LatentCodes, h_x: torch.Tensor, inference: str, generator: torch.Generator) -> torch.Tensor:
    """The code weights c of z = sum_k c_k e_k for generation, from the prior given the prompt alone ([LPC]
    sec. 3.2): ``mean``, the prior itself (z its expected code); ``sample``, one code drawn from it (one-hot).
    (P, d) -> (P, C)."""
    p = torch.softmax(codes.prior_logits(h_x), dim=-1)
    if inference == "mean":
        return p
    k = torch.multinomial(p.cpu(), 1, generator=generator).squeeze(-1)
    return F.one_hot(k, codes.codes).to(p.dtype).to(p.device)


def code_table(codes: LatentCodes, model: nn.Module) -> torch.Tensor:
    """W E: each code's shift of the logits, (C, V).  A prompt with code weights c is served with the logit bias
    c @ W E = W z; an engine keeps this table and gets C numbers a request, not V."""
    return logit_bias(model, codes.codebook, limit=None)


def prompt_states(model: nn.Module, prompt_ids: list[list[int]], pad_id: int) -> torch.Tensor:
    """h_x for each prompt (its last token's final state), the prior's input: (P, d)."""
    ids, attn = pad_sequences(prompt_ids, pad_id)
    device = next(model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    states = final_states(model, ids, attn)
    return states[torch.arange(len(prompt_ids), device=device), attn.sum(dim=1) - 1]


def has_heads(directory: str | Path) -> bool:
    """Whether ``directory`` (a checkpoint) holds LPC heads."""
    return (Path(directory) / SETTINGS).exists()


def save(codes: LatentCodes, directory: str | Path) -> None:
    """``lpc.safetensors`` (codebook and both MLPs) and ``lpc.json`` (their sizes) into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in codes.state_dict().items()}, str(directory / WEIGHTS))
    (directory / SETTINGS).write_text(json.dumps({"hidden": codes.hidden, "codes": codes.codes,
                                                   "mlp_hidden": codes.width}, indent=1) + "\n")


def load(directory: str | Path) -> LatentCodes:
    """The heads ``save`` wrote; a clear error when either file is missing or they disagree."""
    from safetensors.torch import load_file

    directory = Path(directory)
    missing = [n for n in (WEIGHTS, SETTINGS) if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} has no LPC heads ({', '.join(missing)} missing)")
    settings = json.loads((directory / SETTINGS).read_text())
    codes = LatentCodes(settings["hidden"], settings["codes"], settings["mlp_hidden"])
    state = load_file(str(directory / WEIGHTS))
    try:
        codes.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{directory / WEIGHTS} does not match {directory / SETTINGS}: {e}") from e
    return codes


VLLM_BIAS_LIMIT = 100.0  # vLLM clamps each logit bias to [-100, 100]


def logit_bias(model: nn.Module, z: torch.Tensor, limit: float | None = VLLM_BIAS_LIMIT) -> torch.Tensor:
    """W z for the LM head's weight W: (d,) or (B, d) -> (V,) or (B, V), the logits' shift that adding z to the
    final state makes.  Refused for a head with a bias (its identity with LMHead(h + z) fails there) and where
    the shift leaves ``limit`` (vLLM's +-100: it would clamp it and serve another policy than the one trained;
    None where nothing clamps)."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("LPC serves z as the logit bias W z, which equals LMHead(h + z) only for an LM head "
                         "without a bias; this model's head has one")
    bias = z.to(head.weight.dtype) @ head.weight.T
    peak = bias.abs().max().item()
    if limit is not None and peak > limit:
        raise ValueError(f"W z reaches {peak:.1f}, beyond vLLM's logit-bias range of +-{limit:g}: "
                         "the engine would clamp it and serve another policy")
    return bias

