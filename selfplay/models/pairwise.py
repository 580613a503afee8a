"""The pairwise baseline (PairRM-style): one sequence holds the prompt and both responses.

    f(x, A, B) = w^T (h_A - h_B),   P(A > B | x) = sigmoid(f)

where, in the sequence [x; A; EOS; B; EOS], h_A is the hidden state at A's EOS
and h_B the one at the final EOS.  Like PairRM we read one state per candidate
rather than a single summary token; h_B has attended to A, so the model can
compare the two (and represent cyclic preferences), while the difference form
gives it an easy start from "r(A) - r(B)".  (A head on the last token alone
learned mostly a position bias on the embedded world.)

The scorer needs every ordered pair, so a K x K matrix costs K(K-1) forward
passes of double-length sequences, against K for the GPM ([GPM] sec. 4).

Order robustness.  A single sequence sees A before B, so nothing forces
f(A, B) = -f(B, A).  We make the baseline order-robust twice over:
training shows every pair in both orders, with loss
``(-log sigmoid f(w, l) - log sigmoid(-f(l, w))) / 2``; and scoring symmetrises,
``S[i, j] = (f(i, j) - f(j, i)) / 2``, so the matrix is exactly skew-symmetric
(``P(A > B) + P(B > A) = 1``) whatever the order bias left after training.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from selfplay.core.lm import Messages, encode_exchange
from selfplay.data.pairs import PreferencePair
from selfplay.models.backbone import at_positions, batched, device_of, last_token
from selfplay.models.preference_losses import order_robust_nll
from selfplay.models.reward import RewardModel


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Messages, a: str, b: str) -> tuple[list[int], int]:
    """Ids of the templated prompt, response A, EOS, response B, EOS; and the position of A's EOS."""
    ids, _ = encode_exchange(tokenizer, prompt, a)
    b_ids = tokenizer(b, add_special_tokens=False)["input_ids"]
    if not b_ids or b_ids[-1] != tokenizer.eos_token_id:
        b_ids.append(tokenizer.eos_token_id)
    return ids + b_ids, len(ids) - 1


def symmetrised(f: torch.Tensor) -> torch.Tensor:
    """S = (F - F^T) / 2 for raw ordered-pair logits F (K, K): skew-symmetric, zero diagonal."""
    return (f - f.T) / 2


class PairwiseModel(RewardModel):
    """A scalar head over (prompt, A, B) giving the log-odds of A > B; same checkpoint layout as the BT model."""

    kind = "pairwise"
    kind_required = True  # the layout is a plain reward model's: only our meta file tells them apart

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, a_end: torch.Tensor) -> torch.Tensor:
        """Raw log-odds f(x, A, B) (B, 1) from the states at A's EOS and at the final EOS."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.score(at_positions(hidden, a_end) - last_token(hidden, attention_mask)).float()

    def ordered_logits(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], a: list[str], b: list[str], batch_size: int
    ) -> torch.Tensor:
        """Raw f(x, A, B) per row, one forward pass each.  Returns (B,)."""
        encoded = [encode_pair(tokenizer, p, x, y) for p, x, y in zip(prompts, a, b)]
        device = device_of(self)
        a_end = torch.tensor([n for _, n in encoded], device=device)
        return torch.cat([self(ids, mask, a_end[start:start + ids.shape[0]])[:, 0]
                          for start, ids, mask in batched([s for s, _ in encoded], tokenizer, batch_size, device)])

    def _both_orders(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [p.prompt for p in pairs]
        chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
        f = self.ordered_logits(tokenizer, prompts + prompts, chosen + rejected, rejected + chosen, 2 * len(pairs))
        return f[: len(pairs)], f[len(pairs):]

    def pair_loss(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        return order_robust_nll(*self._both_orders(tokenizer, pairs))

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        f_wl, f_lw = self._both_orders(tokenizer, pairs)
        return (f_wl - f_lw) / 2

    @torch.no_grad()
    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        """K(K-1) forward passes per prompt: every ordered pair i != j."""
        rows, index = [], []
        for p, (msgs, group) in enumerate(zip(prompts, responses)):
            for i in range(len(group)):
                for j in range(len(group)):
                    if i != j:
                        rows.append((msgs, group[i], group[j]))
                        index.append((p, i, j))
        f = self.ordered_logits(tokenizer, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], batch_size)
        raw = [torch.zeros(len(g), len(g)) for g in responses]
        for (p, i, j), value in zip(index, f.cpu()):
            raw[p][i, j] = value
        return [symmetrised(m) for m in raw]
