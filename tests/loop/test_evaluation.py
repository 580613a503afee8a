"""Win rates (docs/methods.md §7) on hand-built probability matrices.

Each prompt's matrix orders responses [current (n), initial (n), previous (n)];
vs_initial = mean over prompts of mean(P[cur, init]), vs_previous likewise with the previous block.
"""

from __future__ import annotations

import pytest
import torch

from selfplay.core.win_rates import pairwise_blocks
from selfplay.loop.evaluation import win_rates


def rates(probs: list[torch.Tensor], n: int) -> dict[str, float]:
    """The two point estimates (equal lengths, one unit a prompt)."""
    out = win_rates(probs, n, [[10] * 3 * n for _ in probs], list(range(len(probs))), seed=0)
    assert out["lc_win_rate_vs_initial"] == pytest.approx(out["win_rate_vs_initial"], abs=1e-9)  # equal lengths
    lo, hi = out["win_rate_vs_initial_ci"]
    assert lo <= out["win_rate_vs_initial"] + 1e-12 and out["win_rate_vs_initial"] <= hi + 1e-12
    return {"vs_initial": out["win_rate_vs_initial"], "vs_previous": out["win_rate_vs_previous"]}


def skew_consistent(logits: torch.Tensor) -> torch.Tensor:
    """P = sigmoid(A - A^T): P + P^T = 1, diagonal 0.5."""
    return torch.sigmoid(logits - logits.T)


def test_n1_single_prompt():
    """n = 1, order [cur, init, prev]:
    P = [[0.5, 0.8, 0.3],
         [0.2, 0.5, 0.6],
         [0.7, 0.4, 0.5]]
    vs_initial = P[0, 1] = 0.8, vs_previous = P[0, 2] = 0.3."""
    p = torch.tensor([[0.5, 0.8, 0.3], [0.2, 0.5, 0.6], [0.7, 0.4, 0.5]])
    wr = rates([p], n=1)
    assert wr == {"vs_initial": pytest.approx(0.8), "vs_previous": pytest.approx(0.3)}


def test_n2_block_means_and_prompt_average():
    """n = 2 (6 x 6).  Prompt A: cur x init block [[0.9, 0.7], [0.6, 0.4]] -> mean 2.6/4 = 0.65;
    cur x prev block [[0.5, 0.5], [1.0, 0.0]] -> mean 0.5.
    Prompt B: cur x init all 0.25 -> 0.25; cur x prev [[0.1, 0.2], [0.3, 0.4]] -> 0.25.
    vs_initial = (0.65 + 0.25) / 2 = 0.45; vs_previous = (0.5 + 0.25) / 2 = 0.375.
    Entries outside the two blocks (filled with 9.0) must not matter."""
    a = torch.full((6, 6), 9.0)
    a[0:2, 2:4] = torch.tensor([[0.9, 0.7], [0.6, 0.4]])
    a[0:2, 4:6] = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    b = torch.full((6, 6), 9.0)
    b[0:2, 2:4] = 0.25
    b[0:2, 4:6] = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    wr = rates([a, b], n=2)
    assert wr["vs_initial"] == pytest.approx(0.45)
    assert wr["vs_previous"] == pytest.approx(0.375)
    assert pairwise_blocks([a, b], slice(0, 2), slice(2, 4)).mean(dim=(1, 2)).tolist() == pytest.approx([0.65, 0.25])


def test_identical_policies_win_half():
    """If current, initial and previous samples are the same responses, the cur x init block of a
    skew-consistent P is the full K x K matrix of one policy against itself, whose mean is 0.5
    (P[i][j] + P[j][i] = 1 pairs up, diagonal 0.5)."""
    g = torch.Generator().manual_seed(0)
    n = 3
    r = torch.randn(n, generator=g)
    scores = torch.cat([r, r, r])  # the same three responses in all three blocks
    p = skew_consistent(scores[:, None].expand(3 * n, 3 * n))
    wr = rates([p], n=n)
    assert wr["vs_initial"] == pytest.approx(0.5, abs=1e-6)
    assert wr["vs_previous"] == pytest.approx(0.5, abs=1e-6)


def test_dominating_policy_wins_more():
    """A Bradley-Terry P with current rewards 2 above initial ones: every cur x init entry is sigmoid(2)."""
    n = 2
    r = torch.tensor([2.0, 2.0, 0.0, 0.0, 1.0, 1.0])
    p = torch.sigmoid(r[:, None] - r[None, :])
    wr = rates([p], n=n)
    assert wr["vs_initial"] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert wr["vs_previous"] == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert wr["vs_initial"] > wr["vs_previous"] > 0.5


def test_by_kind_averages_each_kinds_units():
    """Units' values 0.9, 0.5, 0.2 with kinds a, b, a: a -> (0.9 + 0.2) / 2, b -> 0.5."""
    from selfplay.loop.evaluation import by_kind

    assert by_kind([0.9, 0.5, 0.2], ["a", "b", "a"]) == {"a": pytest.approx(0.55), "b": pytest.approx(0.5)}
