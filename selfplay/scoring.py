"""The scorer: K x K preference scores for K responses to one prompt (METHODS 1.3).

``scores[i, j] = s(y_i > y_j | x) / tau``, the preference log-odds, so
``sigmoid(scores)`` is the probability matrix P(y_i > y_j | x).  A GPM needs one
forward pass per response; the K^2 scores are one small matrix product.
"""

from __future__ import annotations

import torch

from selfplay.modeling import Messages, encode_exchange, load_tokenizer, pad_sequences
from selfplay.models.gpm import GPM, score_matrix


class GPMScorer:
    def __init__(self, model: str, tau: float | None, batch_size: int, device: str = "cpu"):
        self.gpm = GPM.from_pretrained(model, tau=tau).to(device).eval()
        self.tokenizer = load_tokenizer(model)
        self.batch_size = batch_size
        self.device = device

    @torch.no_grad()
    def score(self, prompts: list[Messages], responses: list[list[str]]) -> list[torch.Tensor]:
        """One (K_p, K_p) log-odds matrix per prompt; K may differ between prompts."""
        seqs, prompt_lens, owner = [], [], []
        for p, (msgs, group) in enumerate(zip(prompts, responses)):
            for r in group:
                ids, n = encode_exchange(self.tokenizer, msgs, r)
                seqs.append(ids)
                prompt_lens.append(n)
                owner.append(p)
        vs, lams = [], []
        for start in range(0, len(seqs), self.batch_size):
            ids, mask = pad_sequences(seqs[start:start + self.batch_size], self.tokenizer.pad_token_id)
            plen = torch.tensor(prompt_lens[start:start + self.batch_size])
            v, lam = self.gpm.embed(ids.to(self.device), mask.to(self.device), plen.to(self.device))
            vs.append(v.cpu())
            lams.append(lam.cpu())
        v, lam = torch.cat(vs), torch.cat(lams)
        out, start = [], 0
        for group in responses:
            k = len(group)
            # The gate reads the prompt part, identical across a prompt's K sequences: use the first.
            out.append(score_matrix(v[start:start + k], lam[start]) / self.gpm.tau)
            start += k
        return out


def make_scorer(kind: str, model: str, tau: float | None, batch_size: int, device: str = "cpu") -> GPMScorer:
    if kind == "gpm":
        return GPMScorer(model, tau, batch_size, device)
    raise ValueError(f"unknown scorer.kind '{kind}'")
