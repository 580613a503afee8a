"""GPO loss and targets (docs/methods.md §4, [GPM] eq. 5.7 with log Z = 0), checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.algorithms.gpo import build_gpo, gpo_targets
from selfplay.algorithms.losses import square_loss as gpo_loss
from selfplay.algorithms.registry import ALGORITHMS, get_algorithm
from selfplay.core.batch import Batch, Sample

# A hand-built skew-symmetric 3x3 score matrix S[i, j] = s(y_i > y_j | x).
S3 = torch.tensor(
    [
        [0.0, 1.0, 2.0],
        [-1.0, 0.0, 0.5],
        [-2.0, -0.5, 0.0],
    ]
)


def test_gpo_loss_single_value():
    """logp = -1.0, old = -1.5, target = 0.2.

    log-ratio = -1.0 - (-1.5) = 0.5; loss = (0.5 - 0.2)^2 = 0.3^2 = 0.09.
    """
    loss = gpo_loss(torch.tensor([-1.0]), torch.tensor([-1.5]), torch.tensor([0.2]))
    assert loss.shape == (1,)
    torch.testing.assert_close(loss, torch.tensor([0.09]))


def test_gpo_loss_per_example_no_reduction():
    """Three rows, each (logp - old - target)^2, returned unreduced:

    row 0: (-2.0 - (-2.0) - 0.0)^2 = 0
    row 1: (-3.0 - (-1.0) - 1.0)^2 = (-3.0)^2 = 9
    row 2: (-0.5 - (-1.0) - (-0.5))^2 = (1.0)^2 = 1
    """
    logp = torch.tensor([-2.0, -3.0, -0.5])
    old = torch.tensor([-2.0, -1.0, -1.0])
    tgt = torch.tensor([0.0, 1.0, -0.5])
    loss = gpo_loss(logp, old, tgt)
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, torch.tensor([0.0, 9.0, 1.0]))


def test_gpo_loss_zero_when_ratio_matches_target():
    """If log(pi_theta/pi_t) equals the target exactly the loss is 0 and so is its gradient."""
    old = torch.tensor([-4.0, -2.5])
    tgt = torch.tensor([0.25, -0.75])
    logp = (old + tgt).clone().requires_grad_(True)
    loss = gpo_loss(logp, old, tgt)
    torch.testing.assert_close(loss, torch.zeros(2))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.zeros(2))


def test_gpo_loss_gradient_sign_and_value():
    """d/d logp (logp - old - t)^2 = 2 (logp - old - t).

    row 0: logp - old = 0.5 > t = 0.2  -> grad = 2 * 0.3 = 0.6 (positive: descent lowers logp)
    row 1: logp - old = -0.5 < t = 0.2 -> grad = 2 * (-0.7) = -1.4 (negative: descent raises logp)
    The gradient w.r.t. old_logps is the negative of that.
    """
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.5, -1.5], requires_grad=True)
    tgt = torch.tensor([0.2, 0.2])
    gpo_loss(logp, old, tgt).sum().backward()
    assert logp.grad[0] > 0
    assert logp.grad[1] < 0
    torch.testing.assert_close(logp.grad, torch.tensor([0.6, -1.4]))
    torch.testing.assert_close(old.grad, torch.tensor([-0.6, 1.4]))


def test_gpo_targets_row_mean_over_beta():
    """s_hat_i = (1/K) sum_k S[i, k] with K = 3 (diagonal included), target = s_hat / beta, beta = 2:

    row 0: (0 + 1 + 2) / 3 = 1.0     -> 0.5
    row 1: (-1 + 0 + 0.5) / 3 = -0.5/3 = -1/6 -> -1/12
    row 2: (-2 - 0.5 + 0) / 3 = -2.5/3 = -5/6 -> -5/12
    """
    t = gpo_targets(S3, beta=2.0)
    assert t.shape == (3,)
    torch.testing.assert_close(t, torch.tensor([0.5, -1.0 / 12, -5.0 / 12]))


def test_gpo_targets_beta_scaling():
    """Halving beta doubles every target (targets are linear in 1/beta)."""
    torch.testing.assert_close(gpo_targets(S3, 0.5), 2 * gpo_targets(S3, 1.0))
    torch.testing.assert_close(gpo_targets(S3, 1.0), S3.mean(dim=1))


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_gpo_targets_of_skew_symmetric_sum_to_zero(k):
    """sum_i s_hat_i = (1/K) sum_{i,j} S[i, j] = 0 when S = -S^T (each pair cancels)."""
    g = torch.Generator().manual_seed(k)
    a = torch.randn(k, k, generator=g, dtype=torch.float64)
    s = a - a.T
    t = gpo_targets(s, beta=0.7)
    assert abs(t.sum().item()) < 1e-12
    # ... and a response that beats every other one gets the largest target
    s2 = torch.zeros(k, k, dtype=torch.float64)
    s2[0, 1:] = 1.0
    s2[1:, 0] = -1.0
    t2 = gpo_targets(s2, beta=1.0)
    assert t2.argmax().item() == 0
    assert t2[0].item() == pytest.approx((k - 1) / k)


def _sample(ids: list[int]) -> Sample:
    return Sample(response_ids=ids, text=" ".join(map(str, ids)), finished=True)


def test_build_gpo_rows_in_order_with_targets():
    """Two prompts, K = 3 responses each -> 6 rows, prompt-major, sample order kept.

    Prompt A scores S3 (targets with beta = 2: [0.5, -1/12, -5/12]).
    Prompt B scores -S3 (also skew-symmetric), so its targets are the negatives.
    """
    p_a, p_b = [1, 2, 3], [4, 5]
    samples_a = [_sample([10]), _sample([11, 12]), _sample([13, 14, 15])]
    samples_b = [_sample([20, 21]), _sample([22]), _sample([23, 2])]
    rollout = Batch(["1/0", "1/1"], [p_a, p_b], [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
                    scores=[S3, -S3]).with_samples([samples_a, samples_b])
    cfg = OmegaConf.create({"name": "gpo", "beta": 2.0, "pairs": "all"})
    batch = build_gpo(rollout, cfg)
    assert isinstance(batch, Batch)
    assert len(batch) == 6
    assert batch.prompt_ids == [p_a, p_a, p_a, p_b, p_b, p_b]
    assert batch.uids == ["1/0"] * 3 + ["1/1"] * 3  # each example keeps the id of its prompt
    assert batch.response_ids == [[10], [11, 12], [13, 14, 15], [20, 21], [22], [23, 2]]
    expected = torch.tensor([0.5, -1.0 / 12, -5.0 / 12, -0.5, 1.0 / 12, 5.0 / 12])
    torch.testing.assert_close(batch.targets, expected)
    assert batch.ref_logps is None and batch.reference == "previous" and batch.group == 1
    # select keeps rows aligned
    sub = batch.select([4, 0])
    assert sub.response_ids == [[22], [10]] and sub.uids == ["1/1", "1/0"]
    torch.testing.assert_close(sub.targets, torch.tensor([1.0 / 12, 0.5]))


def test_registry():
    algo = get_algorithm("gpo")
    assert algo is ALGORITHMS["gpo"]
    assert algo.build is build_gpo
    with pytest.raises(ValueError, match="unknown algo.name 'ppo'.*gpo"):
        get_algorithm("ppo")
