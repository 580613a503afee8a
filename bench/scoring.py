"""Scoring cost: a full K x K preference matrix from the GPM vs the pairwise baseline and PairRM.

    python bench/scoring.py [--prompts 16] [--ks 2,4,8,16] [--backbone DIR] [--device cpu|cuda]

The GPM embeds each response once (K forward passes) and gets all K^2 scores from
one small matrix product; the pairwise model and PairRM read every ordered pair
(K(K-1) passes of about twice the length; PairRM's also repeat the source).  The GPM
and the pairwise model sit on the same backbone (default: the embedded world's SFT
policy; ``--backbone`` takes any causal-LM directory or hub name); PairRM
(selfplay/models/pairrm.py) on a DeBERTa-v3-style encoder of the same hidden size,
layers, heads and MLP width, reading the same tokenizer (its bos/eos as [CLS]/[SEP],
plus PairRM's four prefix tokens) and the source in the policy's chat template, as
SPPO's scripts pass it.  Heads are untrained, since cost does not depend on the
weights.  Prints seconds per prompt for each K and the ratios pairwise / GPM and
PairRM / GPM.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def timed(fn, repeats: int, sync) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pairrm_like(backbone: str, tok, device: str):
    """PairRM on a random DeBERTa-v2 encoder shaped like ``backbone``'s config, reading ``tok`` (a copy gets
    [CLS] x [SEP] framing and the prefix tokens); returns the model and its tokenizer."""
    import copy

    from tokenizers.processors import TemplateProcessing
    from transformers import AutoConfig, DebertaV2Config, DebertaV2Model

    from selfplay.core.lm import resolve
    from selfplay.models.pairrm import PREFIXES, PairRM, PairRMFormat

    shape = AutoConfig.from_pretrained(resolve(backbone)).get_text_config()
    rm_tok = copy.deepcopy(tok)
    rm_tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A {tok.eos_token}", special_tokens=[(tok.bos_token, tok.bos_token_id),
                                                                      (tok.eos_token, tok.eos_token_id)])
    rm_tok.add_special_tokens({"cls_token": tok.bos_token, "sep_token": tok.eos_token})
    rm_tok.add_tokens(list(PREFIXES))
    config = DebertaV2Config(vocab_size=len(rm_tok), hidden_size=shape.hidden_size,
                             num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
                             intermediate_size=shape.intermediate_size, relative_attention=True, position_buckets=256,
                             norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                             position_biased_input=False, type_vocab_size=0, max_position_embeddings=512)
    fmt = PairRMFormat(*rm_tok.convert_tokens_to_ids(list(PREFIXES)), 1224, 412)
    return PairRM(DebertaV2Model(config), 1, fmt, source="template", template=tok).to(device).eval(), rm_tok


def params(model) -> str:
    return f"{sum(p.numel() for p in model.model.parameters()) / 1e6:.2f}M"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--ks", default="2,4,8,16")
    ap.add_argument("--backbone", default=None, help="causal-LM dir or hub name (default: the embedded world's policy)")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256, help="sequences per forward pass, for both models")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from selfplay.config.loading import load_config
    from selfplay.core.lm import load_tokenizer
    from selfplay.models.backbone import load_backbone
    from selfplay.models.kinds import new_preference_model
    from selfplay.world import corpus
    from selfplay.world.build import get_world

    backbone, tokenizer = args.backbone, args.tokenizer
    if backbone is None:
        world = get_world(load_config([]).world)
        backbone, tokenizer = world.policy, world.tokenizer
    tok = load_tokenizer(tokenizer or backbone)
    rng = random.Random(0)
    texts = corpus.make_prompts(args.prompts, rng)
    prompts = [[{"role": "user", "content": p}] for p in texts]
    models = {kind: new_preference_model(kind, load_backbone(backbone)).to(args.device).eval()
              for kind in ("gpm", "pairwise")}
    pairrm, rm_tok = pairrm_like(backbone, tok, args.device)
    models["pairrm"] = pairrm
    tokenizers = {"gpm": tok, "pairwise": tok, "pairrm": rm_tok}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    print(f"backbone {backbone} ({params(models['gpm'])}; PairRM's DeBERTa-v2 of its shape: {params(pairrm)}) on "
          f"{args.device}; {args.prompts} prompts; batch {args.batch_size}; median of {args.repeats}")
    print(f"{'K':>4} {'GPM passes':>11} {'pair passes':>12} {'GPM s/prompt':>13} {'pairwise s/prompt':>18} "
          f"{'PairRM s/prompt':>16} {'pairwise/GPM':>13} {'PairRM/GPM':>11}")
    for k in (int(x) for x in args.ks.split(",")):
        responses = [[corpus.sample_response(p, rng) for _ in range(k)] for p in texts]
        secs = {kind: timed(lambda m=m, t=tokenizers[kind]: m.score_matrices(t, prompts, responses, args.batch_size),
                            args.repeats, sync) / args.prompts for kind, m in models.items()}
        print(f"{k:>4} {k:>11} {k * (k - 1):>12} {secs['gpm']:>13.5f} {secs['pairwise']:>18.5f} "
              f"{secs['pairrm']:>16.5f} {secs['pairwise'] / secs['gpm']:>13.1f} {secs['pairrm'] / secs['gpm']:>11.1f}")


if __name__ == "__main__":
    main()
