"""PairRM (selfplay/models/pairrm.py, docs/methods.md §2.5) against LLM-Blender's own computation, re-derived here
from reading llm_blender/pair_ranker/{collator.py, ranker.py, pairrm.py}, blender/blender.py and
gpt_eval/utils.py, and SPPO's aggregation from uclaml/SPPO scripts/rank.py + compute_prob.py.

Both published layouts are built here as their authors' code builds them, around a tiny random DeBERTa-v2
(hidden 32, 2 layers) and an offline DeBERTa-v2 tokenizer:
- RankerConfig (llm-blender/PairRM): load_ranker takes the base model's tokenizer, CrossCompareCollator adds the
  four prefix tokens, build_ranker resizes the embedding to len(tokenizer); weights ``pretrained_model.*`` and
  ``head_layer.*`` (nn.Sequential(Dropout, Linear(2H, H), Tanh, Dropout, Linear(H, n_tasks))).
- PairRM-hf (pairrm_to_hf.ipynb): DebertaV2Config plus n_tasks and the prefix ids, the tokenizer saved beside it.
"""

from __future__ import annotations

import json
import math
import string

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model, DebertaV2Tokenizer

from selfplay.core.lm import ModelLoadError
from selfplay.data.pairs import PreferencePair
from selfplay.models.kinds import load_preference_model, new_preference_model
from selfplay.models.preference_scorer import load_scorer, sppo_aggregate

HIDDEN, N_TASKS = 32, 3  # PairRM has n_tasks 1; 3 exercises the mean over tasks
PREFIX = {"source": "<|source|>", "cand1": "<|candidate1|>", "cand2": "<|candidate2|>", "cand": "<|candidate|>"}
WORDS = "the a is of and to in hello good bad king pawn chess board move river water fish apple red sweet".split()

PROMPTS = [[{"role": "user", "content": "Tell me about chess and the king."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe a river [SEP] please."}]]
RESPONSES = [["the king is good", "pawn move to the board", "bad"],
             ["water and fish", "the river is red [SEP] sweet", "a", "hello apple"]]


def base_tokenizer() -> DebertaV2Tokenizer:
    """A DeBERTa-v2 (Unigram) tokenizer laid out as deberta-v3's: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3, [MASK] last."""
    pieces = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [("▁" + c, -2.5) for c in string.ascii_lowercase] + [("▁" + w, -1.0) for w in WORDS] + [("[MASK]", 0.0)]
    return DebertaV2Tokenizer(vocab=pieces, unk_id=3)


def tiny_config(vocab_size: int) -> DebertaV2Config:
    """deberta-v3's attention settings (relative positions, p2c/c2p, shared keys) at a tiny size."""
    return DebertaV2Config(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=512, relative_attention=True,
                           position_buckets=16, norm_rel_ebd="layer_norm", share_att_key=True,
                           pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.5)


def reference_ranker(tok, seed: int):
    """The backbone (resized to the tokenizer, as build_ranker) and head_layer, as LLM-Blender holds them."""
    torch.manual_seed(seed)
    backbone = DebertaV2Model(tiny_config(len(tok) + 7)).eval()  # deberta-v3: config vocab > tokenizer's
    backbone.resize_token_embeddings(len(tok))
    head = nn.Sequential(nn.Dropout(0.05), nn.Linear(2 * HIDDEN, HIDDEN), nn.Tanh(), nn.Dropout(0.05),
                         nn.Linear(HIDDEN, N_TASKS)).eval()
    with torch.no_grad():  # a random model's head would give logits near 0: spread them
        for p in head.parameters():
            p.mul_(4.0)
    return backbone, head


def weights(backbone, head) -> dict[str, torch.Tensor]:
    state = {f"pretrained_model.{n}": t for n, t in backbone.state_dict().items()}
    state.update({f"head_layer.{n}": t for n, t in head.state_dict().items()})
    return {n: t.contiguous() for n, t in state.items()}


def ranker_layout(tmp_path, source_max: int = 1224, candidate_max: int = 412, seed: int = 0):
    """llm-blender/PairRM: RankerConfig config.json naming the base model; returns (dir, base dir, the reference)."""
    base, tok = tmp_path / "base", base_tokenizer()
    tok.save_pretrained(base)
    tiny_config(len(tok) + 7).save_pretrained(base)
    tok.add_tokens(list(PREFIX.values()))  # CrossCompareCollator.__init__, before build_ranker
    backbone, head = reference_ranker(tok, seed)
    path = tmp_path / "PairRM"
    path.mkdir()
    save_file(weights(backbone, head), str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({
        "ranker_type": "pairranker", "model_type": "deberta", "model_name": str(base), "cache_dir": None,
        "load_checkpoint": None, "source_maxlength": source_max, "candidate_maxlength": candidate_max,
        "n_tasks": N_TASKS, "num_pos": 5, "num_neg": 5, "sub_sampling_mode": "all_pair", "loss_type": "instructgpt",
        "reduce_type": "linear", "inference_mode": "bubble", "drop_out": 0.05, "fp16": True, "device": None}))
    return path, base, (backbone, head, tok)


def hf_layout(tmp_path, seed: int = 1):
    """llm-blender/PairRM-hf: DebertaV2Config + prefix ids, tokenizer and weights beside it."""
    tok = base_tokenizer()
    tok.add_tokens(list(PREFIX.values()))
    backbone, head = reference_ranker(tok, seed)
    config = backbone.config
    ids = tok.convert_tokens_to_ids(list(PREFIX.values()))
    config.n_tasks, config.drop_out = N_TASKS, 0.05
    config.source_prefix_id, config.cand1_prefix_id, config.cand2_prefix_id, config.cand_prefix_id = ids
    config.architectures = ["DebertaV2PairRM"]
    path = tmp_path / "PairRM-hf"
    config.save_pretrained(path)
    tok.save_pretrained(path)
    save_file(weights(backbone, head), str(path / "model.safetensors"))
    return path, (backbone, head, tok)


# ------------------------------------------------------------ LLM-Blender's computation, re-derived


def blender_logits(backbone, head, tok, source: str, candidates: list[str], source_max: int,
                   candidate_max: int) -> torch.Tensor:
    """C[i, j] = ranker logits of (i, j): CrossCompareCollator.__call__ (its non-"manual sep" branch: encoding
    [SEP] gives 3 ids) for a batch of one source, then _full_predict -> _forward -> cat_ids, keep_column_mask,
    hidden_states[-1] at torch.where(ids == prefix id), head_layer, (left - right).mean(-1)."""
    sep = tok.sep_token
    src = [(PREFIX["source"] + source).replace(sep, " ")]
    cands = [(PREFIX["cand"] + c).replace(sep, " ") for c in candidates]
    enc = tok(src, max_length=source_max, padding="max_length", truncation=True, return_tensors="pt")
    valid = enc["attention_mask"].any(dim=0)
    source_ids, source_mask = enc["input_ids"][:, valid], enc["attention_mask"][:, valid]
    remaining = source_max - valid.sum().item()
    enc = tok(cands, max_length=candidate_max + remaining // 2, padding="max_length", truncation=True,
              return_tensors="pt")
    valid = enc["attention_mask"].any(dim=0)
    cand_ids, cand_mask = enc["input_ids"][:, valid], enc["attention_mask"][:, valid]
    ids_of = {k: tok.convert_tokens_to_ids(v) for k, v in PREFIX.items()}

    def upto_sep(ids, mask):
        last = (ids == tok.sep_token_id).nonzero()[-1, 0].item()
        return ids[:last + 1], mask[:last + 1], ids[last + 1:], mask[last + 1:]

    k = len(candidates)
    c = torch.zeros(k, k)
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            c1, c2 = cand_ids[i].clone(), cand_ids[j].clone()
            c1[c1 == ids_of["cand"]] = ids_of["cand1"]
            c2[c2 == ids_of["cand"]] = ids_of["cand2"]
            parts = [upto_sep(source_ids[0], source_mask[0]), upto_sep(c1, cand_mask[i]), upto_sep(c2, cand_mask[j])]
            ids = torch.cat([p[0] for p in parts] + [p[2] for p in parts])[None]
            mask = torch.cat([p[1] for p in parts] + [p[3] for p in parts])[None]
            keep = mask.ne(0).any(dim=0)
            ids, mask = ids[:, keep], mask[:, keep]
            with torch.no_grad():
                encs = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
                h = {n: encs[torch.where(ids == ids_of[n])] for n in ("source", "cand1", "cand2")}
                left = head(torch.cat([h["source"], h["cand1"]], dim=-1))
                right = head(torch.cat([h["source"], h["cand2"]], dim=-1))
            c[i, j] = (left - right).mean(dim=-1)[0]
    return c


def notebook_logit(backbone, head, tok, source: str, a: str, b: str) -> float:
    """l(A, B) of the -hf layout as pairrm_to_hf.ipynb computes it: tokenize_pair (1224 / 412, the candidate limit
    (2048 - len(source)) // 2, padded to 2048), then DebertaV2PairRM.forward."""
    source_ids = tok.encode(PREFIX["source"] + source, max_length=1224, truncation=True)
    limit = (1224 + 2 * 412 - len(source_ids)) // 2
    ids = (source_ids + tok.encode(PREFIX["cand1"] + a, max_length=limit, truncation=True)
           + tok.encode(PREFIX["cand2"] + b, max_length=limit, truncation=True))
    enc = tok.pad({"input_ids": [ids]}, return_tensors="pt", padding="max_length", max_length=2048)
    keep = enc["attention_mask"].ne(0).any(dim=0)
    input_ids, mask = enc["input_ids"][:, keep], enc["attention_mask"][:, keep]
    with torch.no_grad():
        encs = backbone(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        h = [encs[torch.where(input_ids == tok.convert_tokens_to_ids(PREFIX[n]))] for n in ("source", "cand1", "cand2")]
        return (head(torch.cat([h[0], h[1]], -1)) - head(torch.cat([h[0], h[2]], -1))).mean(-1).item()


def last_user_turn(messages) -> str:
    return [m["content"] for m in messages if m["role"] == "user"][-1]


# ------------------------------------------------------------ scores


@pytest.mark.parametrize("lengths", [(1224, 412), (24, 10)], ids=["published-lengths", "truncating"])
def test_ranker_layout_scores_as_llm_blender(tmp_path, lengths):
    """S[i, j] = C[i, j] - C[j, i] (compare's "[A,B]+[B,A]") for LLM-Blender's C, source the raw last user turn."""
    path, _, (backbone, head, tok) = ranker_layout(tmp_path, *lengths)
    prompts = PROMPTS + [[{"role": "user", "content": " ".join(WORDS * 3)}]]
    responses = [RESPONSES[0] + [" ".join(WORDS)], RESPONSES[1], [" ".join(WORDS[::-1] * 2), "good move", " ".join(WORDS[3:] * 2)]]
    if lengths == (24, 10):  # truncates: the third source past 24 tokens (its candidates get 10), and the first
        n = [len(tok.encode(PREFIX["source"] + last_user_turn(m))) for m in prompts]  # source's candidates past
        assert n[2] > 24 and n[0] < 22  # their limit 10 + (24 - n) // 2 > 10
        assert len(tok.encode(PREFIX["cand"] + responses[0][-1])) > 10 + (24 - n[0]) // 2
        assert len(tok.encode(PREFIX["cand"] + responses[2][0])) > 10
    scorer = load_scorer("pairrm", str(path), batch_size=4, source="last_turn")
    assert scorer.kind == "pairrm" and len(scorer.tokenizer) == len(tok)
    for s, msgs, group in zip(scorer.score(prompts, responses), prompts, responses):
        c = blender_logits(backbone, head, tok, last_user_turn(msgs), group, *lengths)
        torch.testing.assert_close(s, c - c.T, rtol=0, atol=1e-5)
        assert s.abs().max() > 1e-3


def test_hf_layout_scores_as_the_notebook(tmp_path):
    path, (backbone, head, tok) = hf_layout(tmp_path)
    scorer = load_scorer("pairrm", str(path), batch_size=5, source="last_turn")
    for s, msgs, group in zip(scorer.score(PROMPTS[:1], RESPONSES[:1]), PROMPTS, RESPONSES):
        x = last_user_turn(msgs)
        for i in range(len(group)):
            for j in range(len(group)):
                expected = 0.0 if i == j else (notebook_logit(backbone, head, tok, x, group[i], group[j])
                                               - notebook_logit(backbone, head, tok, x, group[j], group[i]))
                assert abs(s[i, j].item() - expected) < 1e-5
        # and the collator's path gives the same numbers on this layout
        c = blender_logits(backbone, head, tok, x, group, 1224, 412)
        torch.testing.assert_close(s, c - c.T, rtol=0, atol=1e-5)


def test_source_template_is_the_policy_chat_template(tmp_path):
    """scorer.source=template: SPPO's apply_template, the chat template of [user, assistant "None"] cut at "None"."""
    path, (backbone, head, tok) = hf_layout(tmp_path)
    policy = AutoTokenizer.from_pretrained(str(path))
    policy.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{% if m['role'] == "
                            "'assistant' %} <|end|>{% endif %}\n{% endfor %}{% if add_generation_prompt %}"
                            "<|assistant|> {% endif %}")
    policy.save_pretrained(tmp_path / "policy")
    prompt = [{"role": "user", "content": "Tell me about chess."}]
    sppo_source = policy.apply_chat_template(prompt + [{"role": "assistant", "content": "None"}],
                                             tokenize=False).split("None")[0]
    scorer = load_scorer("pairrm", str(path), batch_size=8, source="template", template=str(tmp_path / "policy"))
    (s,) = scorer.score([prompt], RESPONSES[:1])
    c = blender_logits(backbone, head, tok, sppo_source, RESPONSES[0], 1224, 412)
    torch.testing.assert_close(s, c - c.T, rtol=0, atol=1e-5)
    with pytest.raises(ModelLoadError, match="scorer.source=template .* no policy tokenizer"):
        load_scorer("pairrm", str(path), batch_size=8, source="template")


def test_skew_symmetric_batch_free_and_pair_logits(tmp_path):
    path, _ = hf_layout(tmp_path)
    scorer = load_scorer("pairrm", str(path), batch_size=1)
    a = scorer.score(PROMPTS, RESPONSES)
    scorer.batch_size = 64
    b = scorer.score(PROMPTS, RESPONSES)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
        assert torch.equal(x, -x.T) and torch.all(x.diagonal() == 0)
        p = torch.sigmoid(x)
        torch.testing.assert_close(p + p.T, torch.ones_like(p))
    pairs = [PreferencePair(PROMPTS[1], RESPONSES[1][1], RESPONSES[1][3]),
             PreferencePair(PROMPTS[0], RESPONSES[0][2], RESPONSES[0][0])]
    logits = scorer.model.pair_logits(scorer.tokenizer, pairs)
    torch.testing.assert_close(logits, torch.stack([b[1][1, 3], b[0][2, 0]]), rtol=0, atol=1e-5)


# ------------------------------------------------------------ SPPO's aggregation


def test_sppo_aggregation_by_hand():
    """C = [[0, 1, -2], [3, 0, 0.5], [1, -1, 0]] (LLM-Blender's logits).  get_scores_from_cmps:
    score = (C - C^T).mean(-1) over all 3 columns = [(0 - 2 - 3) / 3, (2 + 0 + 1.5) / 3, (3 - 1.5 + 0) / 3]
    = [-5/3, 7/6, 1/2]; compute_prob.py: P[i][j] = 1 / (1 + exp(score_j - score_i))."""
    c = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.0, 0.5], [1.0, -1.0, 0.0]], dtype=torch.float64)
    score = [-5 / 3, 7 / 6, 1 / 2]
    p = sppo_aggregate(c - c.T)
    for i in range(3):
        for j in range(3):
            assert abs(torch.sigmoid(p[i, j]).item() - 1 / (1 + math.exp(score[j] - score[i]))) < 1e-12
    assert torch.equal(p, -p.T) and torch.all(p.diagonal() == 0)


def test_sppo_aggregate_on_pairrm_is_sppo_probability(tmp_path):
    """scorer.aggregate=sppo: sigmoid(S) is SPPO's P from Blender.rank's scores of the same responses."""
    path, _, (backbone, head, tok) = ranker_layout(tmp_path)
    scorer = load_scorer("pairrm", str(path), batch_size=6, source="last_turn", aggregate="sppo")
    (s,) = scorer.score(PROMPTS[1:], RESPONSES[1:])
    c = blender_logits(backbone, head, tok, last_user_turn(PROMPTS[1]), RESPONSES[1], 1224, 412)
    score = (c - c.T).mean(dim=-1).tolist()  # get_scores_from_cmps, policy max_logits
    for i in range(4):
        for j in range(4):
            assert abs(torch.sigmoid(s[i, j]).item() - 1 / (1 + math.exp(score[j] - score[i]))) < 1e-5


# ------------------------------------------------------------ checkpoints refused


def test_base_tokenizer_given_explicitly_and_kind_loader(tmp_path):
    path, base, (backbone, head, tok) = ranker_layout(tmp_path)
    a = load_scorer("pairrm", str(path), 8, tokenizer=str(base)).score(PROMPTS, RESPONSES)
    b = load_scorer("pairrm", str(path), 8, tokenizer=str(path)).score(PROMPTS, RESPONSES)  # run.py's default
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert load_preference_model("pairrm", str(path)).kind == "pairrm"
    with pytest.raises(ValueError, match="published judge"):
        new_preference_model("pairrm", backbone)


def rewrite(path, drop: tuple[str, ...] = (), replace: dict | None = None) -> None:
    from safetensors.torch import load_file

    state = {n: t for n, t in load_file(str(path / "model.safetensors")).items() if n not in drop}
    state.update(replace or {})
    save_file(state, str(path / "model.safetensors"))


def test_missing_head_refused(tmp_path):
    path, _ = hf_layout(tmp_path)
    rewrite(path, drop=("head_layer.4.weight", "head_layer.4.bias"))
    with pytest.raises(ModelLoadError, match=r"has no head_layer.4.weight, head_layer.4.bias \(its tensors: "
                                             r"head_layer.\* \(2\), pretrained_model.\* \(\d+\)\)"):
        load_scorer("pairrm", str(path), 8)


def test_wrong_head_shape_refused(tmp_path):
    path, _ = hf_layout(tmp_path)
    rewrite(path, replace={"head_layer.1.weight": torch.zeros(HIDDEN, HIDDEN)})
    with pytest.raises(ModelLoadError, match=r"head_layer.1.weight has shape \[32, 32\], expected \[32, 64\]"):
        load_scorer("pairrm", str(path), 8)


def test_other_checkpoints_refused(tmp_path):
    path, base, _ = ranker_layout(tmp_path)
    other = base_tokenizer()
    other.add_tokens(["extra1", "extra2"])
    other.save_pretrained(tmp_path / "other")
    tiny_config(len(other)).save_pretrained(tmp_path / "other")
    with pytest.raises(ModelLoadError, match=r"embeds \d+ tokens but its tokenizer with PairRM's four prefix tokens"):
        load_scorer("pairrm", str(path), 8, tokenizer=str(tmp_path / "other"))
    hf, _ = hf_layout(tmp_path)
    with pytest.raises(ModelLoadError, match="its tokenizer maps <\\|source\\|>.* but config.json gives"):
        load_scorer("pairrm", str(hf), 8, tokenizer=str(base))
    (path / "config.json").write_text(json.dumps({**json.loads((path / "config.json").read_text()),
                                                  "ranker_type": "summareranker"}))
    with pytest.raises(ModelLoadError, match="'summareranker' ranker, not PairRM's 'pairranker'"):
        load_scorer("pairrm", str(path), 8)
    tiny_config(10).save_pretrained(path)  # a plain DeBERTa config: neither layout
    with pytest.raises(ModelLoadError, match="neither LLM-Blender's RankerConfig .* nor PairRM-hf's"):
        load_scorer("pairrm", str(path), 8)
