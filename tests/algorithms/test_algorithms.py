"""The self-play algorithms checked against hand-computed numbers: the pair losses (docs/methods.md §6), SPPO's and
GPO's pair recipes (docs/methods.md §4-5, addendum A.2), pair selection and the objectives' metrics.  The learner
on (chosen, rejected) pairs is in tests/policy/test_trainer.py."""

from __future__ import annotations

import math
import random

import pytest
import torch
from omegaconf import OmegaConf

from selfplay.algorithms.dpo import dpo_loss, dpo_objective
from selfplay.algorithms.examples import build_pairs
from selfplay.algorithms.gpo import build_gpo, square_objective
from selfplay.algorithms.ipo import ipo_loss, ipo_objective
from selfplay.algorithms.registry import check_algo
from selfplay.algorithms.selection import candidate_pairs, row_means, select_pairs
from selfplay.algorithms.simpo import simpo_loss, simpo_objective
from selfplay.algorithms.sppo import build_sppo
from selfplay.algorithms.unit import LossInputs
from selfplay.config.schema import AlgoConfig
from selfplay.core.batch import Batch, Sample

LOG2 = math.log(2.0)


def algo_config(name: str, **keys) -> OmegaConf:
    """A full ``algo`` section: the schema, ``name`` and ``keys`` set, the rest filled by ``check_algo``."""
    cfg = OmegaConf.structured(AlgoConfig)
    cfg.name = name
    for k, v in keys.items():
        cfg[k] = v
    check_algo(cfg)
    return cfg


def _sample(ids: list[int]) -> Sample:
    return Sample(response_ids=ids, text=" ".join(map(str, ids)), finished=True)


def rollout_of(scores: list[torch.Tensor], responses: list[list[list[int]]]) -> Batch:
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(len(scores))]
    prompt_ids = [[100 + i, 101 + i] for i in range(len(scores))]
    batch = Batch([f"1/{i}" for i in range(len(scores))], prompt_ids, prompts, scores=scores)
    return batch.with_samples([[_sample(r) for r in group] for group in responses])


# ---- 1. pair losses (docs/methods.md §6) -----------------------------------------------------------------------------

def test_dpo_loss_value_and_gradient_signs():
    """h_w = 0.5, h_l = -0.5, beta = 0.1: z = 0.1 * (0.5 + 0.5) = 0.1.

    loss = -log sigma(0.1) = log(1 + e^-0.1) = log(1.904837418) = 0.644396660
    d loss / d h_w = -beta sigma(-z) = -0.1 * 0.475020813 = -0.047502081 (descent raises the chosen)
    d loss / d h_l = +0.047502081 (descent lowers the rejected)
    Equal log-ratios (z = 0): loss = log 2.
    """
    h_w = torch.tensor([0.5, 0.3], requires_grad=True)
    h_l = torch.tensor([-0.5, 0.3], requires_grad=True)
    loss = dpo_loss(h_w, h_l, beta=0.1)
    torch.testing.assert_close(loss, torch.tensor([0.644396660, LOG2]))
    loss.sum().backward()
    torch.testing.assert_close(h_w.grad, torch.tensor([-0.047502081, -0.05]))
    torch.testing.assert_close(h_l.grad, torch.tensor([0.047502081, 0.05]))
    assert (h_w.grad < 0).all() and (h_l.grad > 0).all()


def test_ipo_loss_value_and_gradient_signs():
    """h_w = 0.5, h_l = -0.5 (margin 1):

    tau = 0.1:  1/(2 tau) = 5 -> (1 - 5)^2 = 16; d/dh_w = 2 (1 - 5) = -8, d/dh_l = +8
    tau = 0.25: 1/(2 tau) = 2 -> (1 - 2)^2 = 1
    tau = 1.0:  1/(2 tau) = 0.5 -> (1 - 0.5)^2 = 0.25; past the target margin the square pulls back:
                d/dh_w = 2 * 0.5 = +1.
    """
    h_w = torch.tensor([0.5], requires_grad=True)
    h_l = torch.tensor([-0.5], requires_grad=True)
    loss = ipo_loss(h_w, h_l, tau=0.1)
    torch.testing.assert_close(loss, torch.tensor([16.0]))
    loss.sum().backward()
    torch.testing.assert_close(h_w.grad, torch.tensor([-8.0]))
    torch.testing.assert_close(h_l.grad, torch.tensor([8.0]))
    torch.testing.assert_close(ipo_loss(h_w.detach(), h_l.detach(), tau=0.25), torch.tensor([1.0]))
    h_w.grad = None
    ipo_loss(h_w, h_l.detach(), tau=1.0).sum().backward()
    torch.testing.assert_close(h_w.grad, torch.tensor([1.0]))


def test_simpo_loss_value_gradient_length_normalisation_and_margin():
    """logp_w = -2 over |y_w| = 2, logp_l = -6 over |y_l| = 3, beta = 2, gamma = 1:

    z = 2 * (-2/2) - 2 * (-6/3) - 1 = -2 + 4 - 1 = 1 -> loss = log(1 + e^-1) = 0.313261688
    d/d logp_w = -(beta/|y_w|) sigma(-1) = -1 * 0.268941421 = -0.268941421
    d/d logp_l = +(beta/|y_l|) sigma(-1) = 2/3 * 0.268941421 = +0.179294281
    Doubling |y_w| together with logp_w (-4 over 4 tokens) leaves z, hence the loss, unchanged;
    doubling |y_w| alone halves the chosen reward: z = -1 + 4 - 1 = 2 -> log(1 + e^-2) = 0.126928011.
    gamma shifts the margin: gamma = 0 -> z = 2 -> 0.126928011; gamma = 3 -> z = -1 -> 1.313261688.
    """
    lw = torch.tensor([-2.0], requires_grad=True)
    ll = torch.tensor([-6.0], requires_grad=True)
    two, three, four = torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([4.0])
    loss = simpo_loss(lw, ll, two, three, beta=2.0, gamma=1.0)
    torch.testing.assert_close(loss, torch.tensor([0.313261688]))
    loss.sum().backward()
    torch.testing.assert_close(lw.grad, torch.tensor([-0.268941421]))
    torch.testing.assert_close(ll.grad, torch.tensor([0.179294281]))
    lw, ll = lw.detach(), ll.detach()
    torch.testing.assert_close(simpo_loss(2 * lw, ll, four, three, 2.0, 1.0), torch.tensor([0.313261688]))
    torch.testing.assert_close(simpo_loss(lw, ll, four, three, 2.0, 1.0), torch.tensor([0.126928011]))
    torch.testing.assert_close(simpo_loss(lw, ll, two, three, 2.0, 0.0), torch.tensor([0.126928011]))
    torch.testing.assert_close(simpo_loss(lw, ll, two, three, 2.0, 3.0), torch.tensor([1.313261688]))


# ---- 2. SPPO's and GPO's pair recipes (docs/methods.md §4-5, A.2) -----------------------------------------------------

# A skew-symmetric score matrix whose best response is the middle one: response 1 beats 0 by 2 and 2 by 1,
# response 2 beats 0 by 0.5.  P = sigmoid(S):
#   sigma(2) = 0.880797078, sigma(1) = 0.731058579, sigma(0.5) = 0.622459331
#   sigma(-2) = 0.119202922, sigma(-1) = 0.268941421, sigma(-0.5) = 0.377540669
# SPPO's p_i = (1/3) sum_j P[i][j], diagonal 0.5 included:
#   p_0 = (0.5 + 0.119202922 + 0.377540669) / 3 = 0.996743591 / 3 = 0.332247864   <- argmin: rejected
#   p_1 = (0.880797078 + 0.5 + 0.731058579) / 3 = 2.111855657 / 3 = 0.703951886   <- argmax: chosen
#   p_2 = (0.622459331 + 0.268941421 + 0.5) / 3 = 1.391400752 / 3 = 0.463800251
# (they sum to K/2 = 1.5; leaving the diagonal out would give p_1 = 0.805927829 instead).
S_SPPO = torch.tensor([
    [0.0, -2.0, -0.5],
    [2.0, 0.0, 1.0],
    [0.5, -1.0, 0.0],
])
P_W, P_L, P_MID = 0.703951886, 0.332247864, 0.463800251
RESP = [[11, 2], [12, 13, 2], [14, 15, 16, 2]]


def test_sppo_pair_recipe_matches_addendum_a2():
    """eta = 4 (beta = 1/eta = 0.25): chosen = response 1, rejected = response 0,
    targets eta (p_w - 1/2) = 4 * 0.203951886 = 0.815807542 and eta (p_l - 1/2) = 4 * -0.167752136 = -0.671008546.

    Made-up log-probs: logps = (-3.0, -5.0), ref = (-3.5, -4.0) -> a_w = 0.5, a_l = -1.0.
    A.2: [(a_w - (1/beta)(p_w - 1/2))^2 + (a_l - (1/beta)(p_l - 1/2))^2] / 2
       = [(0.5 - 0.815807542)^2 + (-1.0 + 0.671008546)^2] / 2
       = [0.099734404 + 0.108235377] / 2 = 0.103984890
    Metrics: mean_target = (0.815807542 - 0.671008546) / 2 = 0.072399498,
             abs_residual = (0.315807542 + 0.328991454) / 2 = 0.322399498.
    """
    cfg = algo_config("sppo", eta=4.0, pairs="best_worst")
    assert cfg.hard is False and cfg.reference == "previous"
    rollout = rollout_of([S_SPPO], [RESP])
    batch = build_sppo(rollout, cfg, random.Random(0))
    assert batch.group == 2 and len(batch) == 1 and batch.reference == "previous"
    assert batch.response_ids == [RESP[1], RESP[0]]
    assert batch.prompt_ids == [rollout.prompt_ids[0]] and batch.row_prompt_ids() == [rollout.prompt_ids[0]] * 2
    assert batch.uids == ["1/0"]  # the example keeps the id of its prompt
    torch.testing.assert_close(batch.targets, torch.tensor([0.815807542, -0.671008546]))

    beta = 1.0 / cfg.eta
    a_w, a_l = 0.5, -1.0
    by_hand = ((a_w - (P_W - 0.5) / beta) ** 2 + (a_l - (P_L - 0.5) / beta) ** 2) / 2
    assert by_hand == pytest.approx(0.103984890, abs=1e-8)
    x = LossInputs(logps=torch.tensor([[-3.0, -5.0]]), ref_logps=torch.tensor([[-3.5, -4.0]]),
                   targets=batch.targets.view(1, 2), lengths=batch.lengths().view(1, 2))
    loss, metrics = square_objective(x, cfg)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.103984890, rel=1e-5)
    assert metrics["mean_target"] == pytest.approx(0.072399498, rel=1e-5)
    assert metrics["abs_residual"] == pytest.approx(0.322399498, rel=1e-5)


def test_sppo_hard_pair_targets_plus_minus_half_eta():
    """hard: p_w -> 1, p_l -> 0, so the targets are eta (1 - 1/2) = +2 and eta (0 - 1/2) = -2 for eta = 4,
    on the same (chosen, rejected) rows as the soft recipe."""
    cfg = algo_config("sppo", eta=4.0, pairs="best_worst", hard=True)
    batch = build_sppo(rollout_of([S_SPPO], [RESP]), cfg, random.Random(0))
    assert batch.group == 2 and batch.response_ids == [RESP[1], RESP[0]]
    torch.testing.assert_close(batch.targets, torch.tensor([2.0, -2.0]))


def test_sppo_all_k_form():
    """pairs = all (docs/methods.md §5): one example per response, in sample order, targets eta (p_i - 1/2):
    4 * (0.332247864 - 0.5, 0.703951886 - 0.5, 0.463800251 - 0.5) = (-0.671008546, 0.815807542, -0.144798996)."""
    cfg = algo_config("sppo", eta=4.0)
    assert cfg.pairs == "all"
    batch = build_sppo(rollout_of([S_SPPO, -S_SPPO], [RESP, RESP]), cfg, random.Random(0))
    assert batch.group == 1 and len(batch) == 6 and batch.reference == "previous"
    assert batch.response_ids == RESP + RESP
    soft = torch.tensor([-0.671008546, 0.815807542, -0.144798996])
    # -S swaps every P[i][j] for 1 - P[i][j]: p_i -> 1 - p_i, so the targets flip sign
    torch.testing.assert_close(batch.targets, torch.cat([soft, -soft]))
    torch.testing.assert_close(row_means(torch.sigmoid(S_SPPO)), torch.tensor([P_L, P_W, P_MID]))


def test_gpo_pair_ranks_by_scores_sppo_by_probabilities():
    """S below: response 0 crushes response 1 (s = 10) but loses to response 2 (s = -1).

    Row means of S (GPO's s_hat):           (0 + 10 - 1)/3 = 3,  (-10 + 0 - 0.5)/3 = -3.5,  (1 + 0.5 + 0)/3 = 0.5
      -> chosen 0, rejected 1; targets s_hat / beta (beta = 2) = 1.5, -1.75
    Row means of sigmoid(S) (SPPO's p_i):   (0.5 + 0.999954602 + 0.268941421)/3 = 0.589632008,
                                            (0.000045398 + 0.5 + 0.377540669)/3 = 0.292528689,
                                            (0.731058579 + 0.622459331 + 0.5)/3 = 0.617839303
      -> chosen 2, rejected 1; targets 4 (p - 1/2) = 0.471357212, -0.829885244
    """
    s = torch.tensor([[0.0, 10.0, -1.0], [-10.0, 0.0, -0.5], [1.0, 0.5, 0.0]])
    rollout = rollout_of([s], [RESP])
    gpo = build_gpo(rollout, algo_config("gpo", beta=2.0, pairs="best_worst"), random.Random(0))
    assert gpo.group == 2 and gpo.reference == "previous"
    assert gpo.response_ids == [RESP[0], RESP[1]]
    torch.testing.assert_close(gpo.targets, torch.tensor([1.5, -1.75]))
    sppo = build_sppo(rollout, algo_config("sppo", eta=4.0, pairs="best_worst"), random.Random(0))
    assert sppo.response_ids == [RESP[2], RESP[1]]
    torch.testing.assert_close(sppo.targets, torch.tensor([0.471357212, -0.829885244]))


# ---- 3. pair selection ----------------------------------------------------------------------------------------

# P[i, j] = P(y_i > y_j), P + P^T = 1, diagonal 1/2.  Row means (diagonal included):
#   p_0 = (0.5 + 0.6 + 0.3 + 0.9)/4 = 0.575, p_1 = (0.4 + 0.5 + 0.2 + 0.55)/4 = 0.4125,
#   p_2 = (0.7 + 0.8 + 0.5 + 0.7)/4 = 0.675 (best), p_3 = (0.1 + 0.45 + 0.3 + 0.5)/4 = 0.3375 (worst).
P4 = torch.tensor([
    [0.5, 0.6, 0.3, 0.9],
    [0.4, 0.5, 0.2, 0.55],
    [0.7, 0.8, 0.5, 0.7],
    [0.1, 0.45, 0.3, 0.5],
])
R4 = [[1], [2], [3], [4]]


def test_best_worst():
    torch.testing.assert_close(row_means(P4), torch.tensor([0.575, 0.4125, 0.675, 0.3375]))
    assert select_pairs(P4, R4, "best_worst", random.Random(0), 4, 0.0) == [(2, 3)]


def test_best_random_is_best_against_a_seeded_other():
    """Chosen is always response 2 (the best); the other is never 2, drawn uniformly from {0, 1, 3},
    the same for the same seed."""
    others = []
    for seed in range(40):
        (pair,) = candidate_pairs(P4, "best_random", random.Random(seed), 4)
        assert pair[0] == 2 and pair[1] != 2
        assert candidate_pairs(P4, "best_random", random.Random(seed), 4) == [pair]
        others.append(pair[1])
    assert set(others) == {0, 1, 3}


def test_all_pairs_oriented_sorted_and_capped():
    """Oriented so that P[w, l] >= 1/2: (0,1) 0.6, (2,0) 0.7, (0,3) 0.9, (2,1) 0.8, (1,3) 0.55, (2,3) 0.7.
    Most confident first (the 0.7 tie keeps enumeration order, (2,0) before (2,3)):
    (0,3) 0.9, (2,1) 0.8, (2,0) 0.7, (2,3) 0.7, (0,1) 0.6, (1,3) 0.55."""
    full = candidate_pairs(P4, "all_pairs", random.Random(0), 10)
    assert full == [(0, 3), (2, 1), (2, 0), (2, 3), (0, 1), (1, 3)]
    assert all(P4[w, l] >= 0.5 for w, l in full)
    assert candidate_pairs(P4, "all_pairs", random.Random(0), 3) == [(0, 3), (2, 1), (2, 0)]
    with pytest.raises(ValueError, match="unknown pair strategy"):
        candidate_pairs(P4, "worst_best", random.Random(0), 3)


def test_margin_filter_and_identical_responses():
    """min_prob = 0.65 keeps the 0.9, 0.8, 0.7, 0.7 pairs and drops 0.6 and 0.55; min_prob = 0.75 keeps
    0.9 and 0.8 only; min_prob = 1.0 keeps nothing since no probability is 1.  best_worst (2, 3) has
    P = 0.7 < 0.75: filtered out.  Responses 2 and 3 made identical: their pair is never kept."""
    rng = random.Random(0)
    assert select_pairs(P4, R4, "all_pairs", rng, 10, 0.65) == [(0, 3), (2, 1), (2, 0), (2, 3)]
    assert select_pairs(P4, R4, "all_pairs", rng, 10, 0.75) == [(0, 3), (2, 1)]
    assert select_pairs(P4, R4, "all_pairs", rng, 10, 1.0) == []
    assert select_pairs(P4, R4, "best_worst", rng, 10, 0.75) == []
    same = [[1], [2], [9, 9], [9, 9]]
    assert select_pairs(P4, same, "best_worst", rng, 10, 0.0) == []
    assert (2, 3) not in select_pairs(P4, same, "all_pairs", rng, 10, 0.0)
    assert len(select_pairs(P4, same, "all_pairs", rng, 10, 0.0)) == 5


def test_build_pairs_targets_and_reference():
    """DPO on two prompts.  Prompt A scores S_SPPO: best 1, worst 0, P(1 > 0) = sigma(2) = 0.880797078 and
    P(0 > 1) = sigma(-2) = 0.119202922.  Prompt B scores -S_SPPO (best 0, worst 1) but its responses 0 and 1
    are identical, so it contributes nothing."""
    cfg = algo_config("dpo")
    assert cfg.pairs == "best_worst" and cfg.reference == "initial" and cfg.beta == 0.1
    dup = [[7, 2], [7, 2], [8, 2]]
    batch = build_pairs(rollout_of([S_SPPO, -S_SPPO], [RESP, dup]), cfg, random.Random(0))
    assert batch.group == 2 and len(batch) == 1 and batch.reference == "initial"
    assert batch.response_ids == [RESP[1], RESP[0]]
    torch.testing.assert_close(batch.targets, torch.tensor([0.880797078, 0.119202922]))

    simpo = build_pairs(rollout_of([S_SPPO], [RESP]), algo_config("simpo", pairs="all_pairs"), random.Random(0))
    assert simpo.reference is None and len(simpo) == 3  # (1,0) 0.88, (1,2) 0.73, (2,0) 0.62
    assert simpo.response_ids == [RESP[1], RESP[0], RESP[1], RESP[2], RESP[2], RESP[0]]

    empty = build_pairs(rollout_of([S_SPPO], [RESP]), algo_config("dpo", min_prob=1.0), random.Random(0))
    assert isinstance(empty, Batch) and len(empty) == 0 and empty.group == 2


# ---- 4. objective metrics -------------------------------------------------------------------------------------

def test_dpo_objective_loss_and_metrics():
    """beta = 0.1, two pairs:
    ex 0: logps (-1, -3), ref (-2, -2): h = (1, -1), rewards beta h = (0.1, -0.1), z = 0.2
          loss = log(1 + e^-0.2) = 0.598138869
    ex 1: logps (-4, -1.5), ref (-3.5, -2): h = (-0.5, 0.5), rewards (-0.05, 0.05), z = -0.1
          loss = log(1 + e^0.1) = 0.744396660
    reward_accuracy = 1/2, reward_margin = (0.2 - 0.1)/2 = 0.05,
    chosen_reward = (0.1 - 0.05)/2 = 0.025, rejected_reward = -0.025.
    """
    x = LossInputs(logps=torch.tensor([[-1.0, -3.0], [-4.0, -1.5]]),
                   ref_logps=torch.tensor([[-2.0, -2.0], [-3.5, -2.0]]),
                   targets=torch.zeros(2, 2), lengths=torch.ones(2, 2))
    loss, m = dpo_objective(x, algo_config("dpo"))
    torch.testing.assert_close(loss, torch.tensor([0.598138869, 0.744396660]))
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["reward_margin"] == pytest.approx(0.05, abs=1e-6)
    assert m["chosen_reward"] == pytest.approx(0.025, abs=1e-6)
    assert m["rejected_reward"] == pytest.approx(-0.025, abs=1e-6)

    # IPO, summed log-ratios, tau = 0.25 (target margin 2): ex 0 margin 2 -> 0; ex 1 margin -1 -> (-1 - 2)^2 = 9
    loss, m = ipo_objective(x, algo_config("ipo", tau=0.25, length_normalize=False))
    torch.testing.assert_close(loss, torch.tensor([0.0, 9.0]))
    assert m["reward_margin"] == pytest.approx((2.0 - 1.0) / 2)


def test_ipo_length_normalized_is_trls_formula():
    """TRL's IPO on per-token log-probs: each sequence's log-prob averaged over its unmasked tokens, then
    ((pi_w - pi_l) - (ref_w - ref_l) - 1/(2 tau))^2.  By hand, tau = 0.5 (target 1): lengths (2, 4);
    h_w = (-1 - -2)/2 = 0.5, h_l = (-6 - -4)/4 = -0.5, margin 1 -> loss 0."""
    torch.manual_seed(0)
    tokens = torch.randn(3, 2, 5) - 2  # (examples, chosen/rejected, tokens) per-token log-probs
    ref_tokens = torch.randn(3, 2, 5) - 2
    mask = torch.tensor([[[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]],
                         [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]], dtype=torch.float32)
    tau = 0.1
    mean = lambda lp: (lp * mask).sum(-1) / mask.sum(-1)
    pi, ref = mean(tokens), mean(ref_tokens)
    trl = ((pi[:, 0] - pi[:, 1]) - (ref[:, 0] - ref[:, 1]) - 1 / (2 * tau)) ** 2
    x = LossInputs(logps=(tokens * mask).sum(-1), ref_logps=(ref_tokens * mask).sum(-1), targets=torch.zeros(3, 2),
                   lengths=mask.sum(-1))
    cfg = algo_config("ipo", tau=tau)
    assert cfg.length_normalize is True  # TRL's form is the default
    torch.testing.assert_close(ipo_objective(x, cfg)[0], trl)
    summed = ipo_objective(x, algo_config("ipo", tau=tau, length_normalize=False))[0]
    assert not torch.allclose(summed, trl)

    by_hand = LossInputs(logps=torch.tensor([[-1.0, -6.0]]), ref_logps=torch.tensor([[-2.0, -4.0]]),
                         targets=torch.zeros(1, 2), lengths=torch.tensor([[2.0, 4.0]]))
    loss, m = ipo_objective(by_hand, algo_config("ipo", tau=0.5))
    torch.testing.assert_close(loss, torch.tensor([0.0]))
    assert m["reward_margin"] == pytest.approx(1.0)


def test_simpo_objective_uses_lengths_not_reference():
    """beta = 2, gamma = 1, logps (-2, -6), lengths (2, 3): z = -2 + 4 - 1 = 1 -> 0.313261688;
    rewards beta logp / |y| = (-2, -4): accuracy 1, margin 2."""
    x = LossInputs(logps=torch.tensor([[-2.0, -6.0]]), ref_logps=None, targets=torch.zeros(1, 2),
                   lengths=torch.tensor([[2.0, 3.0]]))
    loss, m = simpo_objective(x, algo_config("simpo"))
    torch.testing.assert_close(loss, torch.tensor([0.313261688]))
    assert m["reward_accuracy"] == 1.0 and m["reward_margin"] == pytest.approx(2.0)
    assert m["chosen_reward"] == pytest.approx(-2.0) and m["rejected_reward"] == pytest.approx(-4.0)


def test_square_objective_averages_rows_of_an_example():
    """All-K form (group 1): three examples, loss (logp - ref - t)^2 each:
    (−1 − (−1) − 0.5)^2 = 0.25, (−2 − (−3) − 0)^2 = 1, (0 − 0 − (−2))^2 = 4;
    mean_target = (0.5 + 0 − 2)/3 = −0.5; abs_residual = (0.5 + 1 + 2)/3 = 7/6."""
    x = LossInputs(logps=torch.tensor([[-1.0], [-2.0], [0.0]]), ref_logps=torch.tensor([[-1.0], [-3.0], [0.0]]),
                   targets=torch.tensor([[0.5], [0.0], [-2.0]]), lengths=torch.ones(3, 1))
    loss, m = square_objective(x, algo_config("gpo"))
    torch.testing.assert_close(loss, torch.tensor([0.25, 1.0, 4.0]))
    assert m["mean_target"] == pytest.approx(-0.5)
    assert m["abs_residual"] == pytest.approx(7.0 / 6.0)


@pytest.mark.parametrize("name,keys", [("sppo", {"hard": True}), ("sppo", {}), ("gpo", {})])
def test_pair_form_skips_a_prompt_whose_responses_all_tie(name, keys):
    """With every response tied, argmax = argmin: no (best, worst) pair, so the prompt gives no example
    (the hard variant would otherwise push one response up with nothing pulling the other way)."""
    cfg = algo_config(name, pairs="best_worst", **keys)
    build = build_sppo if name == "sppo" else build_gpo
    s = torch.tensor([[0.0, 1.0, 0.5], [-1.0, 0.0, -0.5], [-0.5, 0.5, 0.0]])  # row means 0.5, -0.5, 0
    batch = build(rollout_of([torch.zeros(3, 3), s], [[[5, 2], [6, 2], [7, 2]], [[8, 2], [9, 2], [10, 2]]]), cfg)
    assert len(batch) == 1 and batch.response_ids == [[8, 2], [9, 2]] and batch.uids == ["1/1"]


def test_margin_filter_keeps_a_pair_exactly_at_the_threshold():
    """P = 0.7 in float32 is 0.69999999: a filter of 0.7 still keeps it."""
    probs = torch.tensor([[0.5, 0.7], [0.3, 0.5]])
    assert select_pairs(probs, [[1], [2]], "best_worst", random.Random(0), 1, 0.7) == [(0, 1)]
    assert select_pairs(probs, [[1], [2]], "best_worst", random.Random(0), 1, 0.71) == []
