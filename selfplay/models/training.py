"""Training and evaluating preference models: pair models on (prompt, chosen, rejected) pairs,
the multi-objective reward model on attribute-labelled rows.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import torch
from transformers import PreTrainedTokenizerBase

from selfplay.core.optim import lr_multiplier, minimize
from selfplay.data.attributes import AttributeRow
from selfplay.data.pairs import PreferencePair
from selfplay.models.backbone import PreferenceModel, batched, device_of, encode_responses, last_token
from selfplay.models.preference_losses import masked_mse_loss
from selfplay.models.gpm import GPM, block_scores
from selfplay.models.multi_objective import MultiObjectiveRewardModel


def train_preference_model(
    model: PreferenceModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup_ratio: float = 0.0,
    schedule: str = "linear",
) -> list[float]:
    """AdamW over ``steps`` minibatches drawn with ``seed``, on the model's own pair loss: the learning rate
    rises linearly over ``warmup_ratio`` of the steps, then follows ``schedule`` (``lr_multiplier``: constant,
    linear decay to 0 or cosine).  Returns the loss of every step.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)

    def step_loss(_: int) -> torch.Tensor:
        batch = rng.sample(pairs, min(batch_size, len(pairs)))
        return model.pair_loss(tokenizer, batch).mean()

    warmup = round(warmup_ratio * steps)
    return minimize(model, step_loss, steps, lr, schedule=lr_multiplier(steps, warmup, schedule))


@torch.no_grad()
def pair_logits(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> torch.Tensor:
    """Log-odds that chosen beats rejected, for every pair.  Returns (N,) on the CPU."""
    model.eval()
    return torch.cat([model.pair_logits(tokenizer, pairs[i:i + batch_size]).cpu() for i in range(0, len(pairs), batch_size)])


def accuracy(logits: torch.Tensor) -> float:
    """Share of pairs ranked right: logit > 0 counts 1, a tie (logit == 0) counts 1/2."""
    return ((logits > 0).float() + 0.5 * (logits == 0).float()).mean().item()


def pair_accuracy(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> float:
    return accuracy(pair_logits(model, tokenizer, pairs, batch_size))


def accuracy_report(
    model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int = 256
) -> dict:
    """Overall accuracy and, where pairs carry a subset, accuracy per subset (RewardBench-style)."""
    logits = pair_logits(model, tokenizer, pairs, batch_size)
    report = {"accuracy": accuracy(logits), "pairs": len(pairs), "mean_margin": logits.mean().item()}
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        if p.subset is not None:
            by_subset[p.subset].append(i)
    if by_subset:
        report["subsets"] = {name: {"accuracy": accuracy(logits[idx]), "pairs": len(idx)}
                             for name, idx in sorted(by_subset.items())}
    return report


PROBE_ROWS = 1024  # rows the initial probe is fitted on (a sample of the training rows)


PROBE_RIDGE = 1e-3  # ridge penalty of the probe, relative to the mean squared feature norm


# The ridge of the GPM head's start (init_gpm_head), relative to the states' mean variance: not small, so the
# head reads directions where the pair difference is large outright, not only relative to states that barely vary.
GPM_INIT_RIDGE = 0.1


WARMUP_SHARE = 0.1  # of the steps, with the learning rate rising linearly


def label_tensor(rows: list[AttributeRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, m) with NaN where missing, and the mask (N, m) of observed labels."""
    labels = torch.tensor([[math.nan if x is None else x for x in r.labels] for r in rows], dtype=torch.float32)
    return labels, ~labels.isnan()


def predict(model: MultiObjectiveRewardModel, tokenizer: PreTrainedTokenizerBase, rows: list[AttributeRow],
            batch_size: int) -> torch.Tensor:
    """Rewards (N, m) for ``rows``, differentiable, on the model's device."""
    return model.rewards(tokenizer, [r.prompt for r in rows], [[r.response] for r in rows], batch_size)


@torch.no_grad()
def last_features(model: PreferenceModel, tokenizer: PreTrainedTokenizerBase, prompts: list, responses: list[str],
                  batch_size: int) -> torch.Tensor:
    """The backbone's last-token hidden states (N, hidden) of each (prompt, response), float32 on the CPU:
    what a one-state head (the GPM's, the reward models') reads."""
    seqs, _ = encode_responses(tokenizer, prompts, [[r] for r in responses], model.encode)
    out = []
    for _, ids, mask in batched(seqs, tokenizer, batch_size, device_of(model)):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.append(last_token(hidden, mask).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def init_gpm_head(model: GPM, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int,
                  seed: int = 0) -> None:
    """Start the GPM's value head on the directions along which paired responses differ most *relative to
    how large the states are there*: its 2k rows become the top 2k generalized eigenvectors w of

        A w = mu B w,  A = E[(h_chosen - h_rejected)(h_chosen - h_rejected)^T],  B = E[h h^T] + r I,

    over the last-token states of up to PROBE_ROWS pairs drawn with ``seed`` (B uncentred, because the
    embedding normalises W h itself; r = GPM_INIT_RIDGE x the mean of its diagonal), each row scaled to the mean
    norm of the random rows it replaces.  mu is the share of |W h|^2 that the pair difference makes up along w.
    Rows 2l and 2l+1 (largest mu first) form block l of R; where the probe pairs' mean score s(chosen >
    rejected) in a block is negative, its two rows are swapped, which negates that block's scores.  The scale
    gate, if any, starts uniform (its prompt head at zero, so lambda = 1/k for every prompt).

    Why: where a pair's responses share most of their text, a random head's embedding v = normalise(W h) is a
    common part c plus a small difference d, and on a preference cycle the gradient that grows d is second
    order in d (docs/methods.md §8): from a random head some fits never leave s = 0.  Along these rows d is a
    larger share from the first step (|W d| / |W h| 0.23 on medium cyclic data, against 0.03 at random).
    Why the orientation: an eigenvector's sign and a block's row order are arbitrary, and a block whose three
    cycle classes lie in the plane in the wrong rotational order scores the cycle backwards (probe accuracy
    0.42-0.46 on four of five seeds of one large cyclic set).  Turning it round means passing through s = 0,
    the saddle again: those fits left it at steps 100-150 or never; oriented, all five leave it by step 40.
    Why this ridge: with a small one (1e-3) the top directions are those where the states barely vary
    (|W d| / |W h| 0.65 at the start), and the backbone's first updates add variance there: within about 30
    steps the ratio was 0.06 and the fit back at the saddle, some leaving it only after 130 steps.  Which
    fit is slow is chaotic in r (one fit left at steps 30 / 70 / never for r = 1e-3 / 0.1 / 1, another at
    130 / 65 / 35); at r = 0.1 the slowest fit we traced left by step 70.
    Why the uniform gate: a random prompt head gives every prompt its own random block weights and can mute
    the block that carries the difference (one gated large fit stayed at log 2 until step 110; with
    lambda = 1/k from the start it left by step 35).
    """
    sample = random.Random(seed).sample(pairs, min(PROBE_ROWS, len(pairs)))
    prompts = [p.prompt for p in sample]
    h = last_features(model, tokenizer, prompts + prompts, [p.chosen for p in sample] + [p.rejected for p in sample],
                      batch_size).double()
    diff = h[:len(sample)] - h[len(sample):]
    a, b = diff.T @ diff / len(diff), h.T @ h / len(h)
    b = b + GPM_INIT_RIDGE * b.diagonal().mean() * torch.eye(b.shape[0], dtype=b.dtype)
    # B = L L^T turns A w = mu B w into the symmetric (L^-1 A L^-T) u = mu u, with w = L^-T u
    l_inv = torch.linalg.inv(torch.linalg.cholesky(b))
    _, u = torch.linalg.eigh(l_inv @ a @ l_inv.T)  # eigenvalues ascending
    rows = model.value_head.weight
    w = (l_inv.T @ u[:, -rows.shape[0]:].flip(-1)).T  # (2k, hidden), largest mu first
    w = w / w.norm(dim=1, keepdim=True) * rows.norm(dim=1).mean()
    # Orient each block so that the probe pairs' mean score in it is >= 0: swapping a block's two rows negates it.
    v = torch.nn.functional.normalize(h @ w.T, dim=-1)
    block_mean = block_scores(v[:len(sample)], v[len(sample):]).mean(0)  # (k,)
    for block in torch.nonzero(block_mean < 0).flatten().tolist():
        w[[2 * block, 2 * block + 1]] = w[[2 * block + 1, 2 * block]]
    rows.copy_(w.to(rows.dtype))
    if model.prompt_head is not None:  # the scale gate starts uniform: lambda = 1/k for every prompt
        model.prompt_head.weight.zero_()


@torch.no_grad()
def init_head(model: MultiObjectiveRewardModel, tokenizer: PreTrainedTokenizerBase, rows: list[AttributeRow],
              batch_size: int, seed: int = 0) -> None:
    """Set each head row to the ridge probe of that attribute's observed labels on the current features.

    w_a = argmin sum_{rows observing a} (w^T h - y_a)^2 + lam |w|^2,  lam = PROBE_RIDGE * mean |h|^2 * n_a,
    fitted on up to PROBE_ROWS rows drawn with ``seed``.
    """
    sample = random.Random(seed).sample(rows, min(PROBE_ROWS, len(rows)))
    h = last_features(model, tokenizer, [r.prompt for r in sample], [r.response for r in sample], batch_size).double()
    labels, mask = label_tensor(sample)
    eye = torch.eye(h.shape[1], dtype=h.dtype)
    for a in range(labels.shape[1]):
        ha, ya = h[mask[:, a]], labels[mask[:, a], a].double()
        if len(ya) == 0:
            continue
        lam = PROBE_RIDGE * ha.pow(2).sum(-1).mean() * len(ya)
        w = torch.linalg.solve(ha.T @ ha + lam * eye, ha.T @ ya)
        model.score.weight[a].copy_(w.to(model.score.weight.dtype))


def train_attribute_model(
    model: MultiObjectiveRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[AttributeRow],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup_ratio: float = WARMUP_SHARE,
    schedule: str = "linear",
    probe_start: bool = True,
) -> list[float]:
    """AdamW, warm-up then ``schedule`` (linear decay by default), over ``steps`` minibatches drawn with ``seed``, on the masked MSE of
    the labels (0-100 scale).  The head starts at the probe (``init_head``, module docstring); pass
    ``probe_start=False`` to keep a head that is already trained.  Returns every step's loss."""
    if probe_start:
        init_head(model, tokenizer, rows, batch_size, seed)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    device = device_of(model)

    def step_loss(_: int) -> torch.Tensor:
        batch = rng.sample(rows, min(batch_size, len(rows)))
        labels, mask = label_tensor(batch)
        return masked_mse_loss(predict(model, tokenizer, batch, len(batch)), labels.to(device), mask.to(device))

    warmup = max(1, round(warmup_ratio * steps))
    return minimize(model, step_loss, steps, lr, schedule=lr_multiplier(steps, warmup, schedule))


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two (n,) tensors; 0.0 if either is constant (or n < 2)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return float((x * y).sum() / denom) if denom > 0 else 0.0


@torch.no_grad()
def regression_report(
    model: MultiObjectiveRewardModel, tokenizer: PreTrainedTokenizerBase, rows: list[AttributeRow], batch_size: int
) -> dict:
    """Per attribute, over the rows that observe it: count, MSE and Pearson r of prediction and label (0-100)."""
    model.eval()
    pred = torch.cat([predict(model, tokenizer, rows[i:i + batch_size], batch_size).cpu()
                      for i in range(0, len(rows), batch_size)])
    labels, mask = label_tensor(rows)
    report = {}
    for a, name in enumerate(model.attributes):
        p, y = pred[mask[:, a], a], labels[mask[:, a], a]
        report[name] = {"n": len(y), "mse": float((p - y).pow(2).mean()) if len(y) else None,
                        "correlation": pearson(p, y)}
    return {"rows": len(rows), "attributes": report}
