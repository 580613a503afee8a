"""Seed 000 fig. 2's flipping experiment on the embedded world's pairs (issue 16).

    python bench/lpc_flip.py [--flips 0,0.25,0.5] [--codes 64] [--seeds 0,1,2] [--epochs 2] [--lpc-lr X]

For each share x of flipped labels and each seed: x of the world's oracle-labelled training pairs
(``pairs/train.jsonl``) get chosen and rejected swapped and " [FLIP]" appended to their prompt
(``selfplay.world.rows.flipped_pairs``); DPO trains the world's SFT policy on them (reference: the same policy),
without and with LPC, through the learner the loop uses (one iteration of ``--epochs`` epochs, the loop's
train settings otherwise).  The implicit reward r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) (with LPC,
pi(y|x, z) with z the prior's expected code for x, as at generation) then ranks the unflipped held-out pairs
(``pairs/test.jsonl``, no mark): the preference accuracy is the share with r(x, y_w) > r(x, y_l).  Prints one
Markdown row per flip share: the accuracy without and with LPC (mean and range over the seeds) and the
difference.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch


def pair_batch(tokenizer, pairs: list, reference: str | None):
    """The learner's Batch of ``pairs``: one example per pair, its chosen response's row first."""
    from selfplay.core.batch import Batch
    from selfplay.core.lm import encode_prompt

    eos = [tokenizer.eos_token_id]
    prompts = [encode_prompt(tokenizer, p.prompt) for p in pairs]
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] + eos
                 for p in pairs for text in (p.chosen, p.rejected)]
    return Batch.examples([f"1/{i}" for i in range(len(pairs))], prompts, responses, torch.zeros(len(responses)), 2,
                          reference)


@torch.no_grad()
def logprobs(model, codes, batch, pad_id: int, rows: int = 64) -> torch.Tensor:
    """log pi(y|x) of every row; with LPC heads, log pi(y|x, z), z = E_{p(z|x)}[e_z] (``algo.lpc.inference=mean``)."""
    from selfplay.core.lm import response_batch, sequence_logprobs
    from selfplay.policy import lpc

    model.eval()
    prompt_ids, out = batch.row_prompt_ids(), []
    for s in range(0, len(batch.response_ids), rows):
        ids, attn, mask = response_batch(prompt_ids[s:s + rows], batch.response_ids[s:s + rows], pad_id)
        if codes is None:
            out.append(sequence_logprobs(model, ids, attn, mask))
            continue
        states = lpc.final_states(model, ids, attn)
        prompt_end, _ = lpc.last_positions(mask, attn)
        h_x = states[torch.arange(len(ids)), prompt_end]
        z = codes.embed(lpc.prompt_weights(codes, h_x, "mean", torch.Generator()))
        out.append(lpc.conditioned_logprobs(model, states, ids, mask, z))
    return torch.cat(out)


def preference_accuracy(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> float:
    """The share of pairs (rows chosen, rejected, chosen, ...) whose implicit reward ranks the chosen first
    (beta > 0 does not change the order)."""
    margin = (policy_logps - reference_logps).view(-1, 2)
    return (margin[:, 0] > margin[:, 1]).float().mean().item()


def train_and_score(world, train_pairs: list, test_batch, reference_logps: torch.Tensor, codes: int, seed: int,
                    epochs: int, lpc_lr: float | None) -> float:
    from selfplay.config.loading import load_config
    from selfplay.policy.specs import LearnerSpec
    from selfplay.policy.trainer import PolicyTrainer

    cfg = load_config(["algo=dpo", f"algo.lpc.codes={codes}", f"train.epochs={epochs}", "generator.backend=hf",
                       *([f"algo.lpc.lr={lpc_lr}"] if lpc_lr and codes else [])])
    learner = PolicyTrainer(LearnerSpec(world.policy, world.policy, "float32", cfg.train, cfg.algo, seed=seed,
                                        initial=world.policy))
    learner.begin_iteration(pair_batch(learner.tokenizer, train_pairs, "initial"))
    for epoch in range(epochs):
        learner.train_epoch(epoch, iteration=1)
    policy = logprobs(learner.model, learner.codes, test_batch, learner.tokenizer.pad_token_id)
    return preference_accuracy(policy, reference_logps)


def main() -> None:
    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_causal_lm, load_tokenizer
    from selfplay.data.pairs import load_pairs
    from selfplay.world.build import get_world
    from selfplay.world.rows import flipped_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--flips", default="0,0.25,0.5")
    ap.add_argument("--codes", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lpc-lr", type=float, default=None, help="algo.lpc.lr (default: the config's)")
    args = ap.parse_args()
    world = get_world(load_config([]).world)
    train, _ = load_pairs(str(Path(world.pairs) / "train.jsonl"), max_bad_share=0.0)
    test, _ = load_pairs(str(Path(world.pairs) / "test.jsonl"), max_bad_share=0.0)
    tokenizer = load_tokenizer(world.policy)
    test_batch = pair_batch(tokenizer, test, "initial")
    reference = logprobs(load_causal_lm(world.policy), None, test_batch, tokenizer.pad_token_id)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"DPO on the world's {len(train)} training pairs, {args.epochs} epochs, seeds {seeds}; preference accuracy "
          f"of the implicit reward on its {len(test)} unflipped held-out pairs; LPC with {args.codes} codes "
          f"(algo.lpc.lr={args.lpc_lr or 'default'})\n")
    print("| flipped | DPO | DPO + LPC | LPC - DPO |\n|---|---|---|---|")
    for share in (float(x) for x in args.flips.split(",")):
        t, acc = time.perf_counter(), {0: [], args.codes: []}
        for seed in seeds:
            pairs = flipped_pairs(train, share, random.Random(seed))
            for codes in acc:
                acc[codes].append(train_and_score(world, pairs, test_batch, reference, codes, seed, args.epochs,
                                                  args.lpc_lr))
        cell = lambda xs: f"{statistics.mean(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"  # noqa: E731
        diffs = [b - a for a, b in zip(acc[0], acc[args.codes])]
        print(f"| {share:.0%} | {cell(acc[0])} | {cell(acc[args.codes])} | {statistics.mean(diffs):+.3f} "
              f"({min(diffs):+.3f} to {max(diffs):+.3f}) |  <!-- {time.perf_counter() - t:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
