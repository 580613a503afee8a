"""Training and evaluating the multi-objective reward model on attribute rows (METHODS 2.3, seed 003 sec. 2.1).

The labels are on 0-100 (means near 50) and the Hugging Face head has no bias.  A randomly initialised
head starts about 50 points from every label, and at a learning rate that suits the backbone Adam
moves each head weight by about lr per step, so it needs hundreds of steps only to reach the means.
``train_attribute_model`` therefore first starts the head at the ridge-regression probe of each
attribute's labels on the initial last-token features (``init_head``): the final RMSNorm leaves those
features a large common component, from which the bias-free head reads the mean.  A fitted head is large, so the backbone's first full-size
Adam steps would move the features under it and throw the loss far up; the learning rate warms up
linearly over the first ``WARMUP_SHARE`` of the steps, then decays linearly to 0.  What is saved stays
a plain ``score.weight`` on 0-100.

Measured on the embedded world's policy (hidden 128, 2 layers), 2000 oracle-labelled rows (helpfulness,
verbosity; 20% of the rows miss one label), 200 steps of batch 32 at lr 2e-3, held-out MSE (label
variance 466 / 769) and correlation:

    random head, no warm-up     437 / 820   r 0.31 / 0.78
    probe, no warm-up           136 / 3.0   r 0.84 / 0.998   first steps' loss 197 -> 982
    probe + warm-up (used)      119 / 4.7   r 0.87 / 0.997   largest loss 359
    (the probe alone, untrained 416 / 96)

On the tests' random 1-layer model (hidden 64, 60 rows, 40 steps of 16) the probe's first step threw
the loss from 250 to 34700 without warm-up and to 3800 with it.  Also tried: training the head in
label units (W = W0 + 50 W', W' from zero), 208 / 6.1 alone and no better on top of the probe (145 /
3.9); a head started at the label means along the mean feature (small weights, no spike) that then
learns too slowly (738 / 578 against 77 / 60 on the random model); a ridge of 1e-2 (137 / 5.4) or
1e-5 (a probe of 361 / 64 whose first 20 steps' loss averaged 2160).
"""

from __future__ import annotations

import math
import random

import torch
from transformers import PreTrainedTokenizerBase

from selfplay.attributes import AttributeRow
from selfplay.losses import masked_mse_loss
from selfplay.models.backbone import batched, device_of, encode_responses, last_token
from selfplay.models.multi_objective import MultiObjectiveRewardModel
from selfplay.optim import lr_multiplier, minimize

PROBE_ROWS = 1024  # rows the initial probe is fitted on (a sample of the training rows)
PROBE_RIDGE = 1e-3  # ridge penalty of the probe, relative to the mean squared feature norm
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
def last_features(model: MultiObjectiveRewardModel, tokenizer: PreTrainedTokenizerBase, rows: list[AttributeRow],
                  batch_size: int) -> torch.Tensor:
    """The last-token hidden states (N, hidden) the head reads, float32 on the CPU."""
    seqs, _ = encode_responses(tokenizer, [r.prompt for r in rows], [[r.response] for r in rows])
    out = []
    for _, ids, mask in batched(seqs, tokenizer, batch_size, device_of(model)):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.append(last_token(hidden, mask).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def init_head(model: MultiObjectiveRewardModel, tokenizer: PreTrainedTokenizerBase, rows: list[AttributeRow],
              batch_size: int, seed: int = 0) -> None:
    """Set each head row to the ridge probe of that attribute's observed labels on the current features.

    w_a = argmin sum_{rows observing a} (w^T h - y_a)^2 + lam |w|^2,  lam = PROBE_RIDGE * mean |h|^2 * n_a,
    fitted on up to PROBE_ROWS rows drawn with ``seed``.
    """
    sample = random.Random(seed).sample(rows, min(PROBE_ROWS, len(rows)))
    h = last_features(model, tokenizer, sample, batch_size).double()  # (N, H)
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
    probe_start: bool = True,
) -> list[float]:
    """AdamW, warm-up then linear decay, over ``steps`` minibatches drawn with ``seed``, on the masked MSE of
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

    warmup = max(1, round(WARMUP_SHARE * steps))
    return minimize(model, step_loss, steps, lr, schedule=lr_multiplier(steps, warmup, "linear"))


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
