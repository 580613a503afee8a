"""The three preference-model kinds behind one interface (docs/methods.md §2.1-2.2, A.1): score matrices,
checkpoints, kind checks, the scorer, and the pairwise baseline's order robustness."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from selfplay.core.lm import ModelLoadError, encode_exchange, load_tokenizer
from selfplay.data.pairs import PreferencePair, load_pairs
from selfplay.models import KINDS, PAIR_KINDS
from selfplay.models.backbone import META_FILE, load_backbone
from selfplay.models.gpm import score_matrix
from selfplay.models.kinds import load_preference_model, new_preference_model
from selfplay.models.preference_losses import order_robust_nll, preference_nll
from selfplay.models.pairwise import encode_pair, symmetrised
from selfplay.models.reward import RewardModel, reward_score_matrix
from selfplay.models.preference_scorer import load_scorer
from selfplay.models.training import accuracy, accuracy_report, train_preference_model

PROMPTS = [[{"role": "user", "content": "Tell me about apples."}], [{"role": "user", "content": "Describe rivers please."}]]
RESPONSES = [["sure red sweet orchard", "hmm stuff", "well juice tree crisp red", "okay"],
             ["water flow", "sure fish current delta bank", "maybe"]]


@pytest.fixture(scope="module")
def tok(world):
    return load_tokenizer(world.tokenizer)


def tiny_backbone(tok, seed: int = 0, hidden: int = 64):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return AutoModel.from_config(cfg)


def tiny(kind: str, tok, seed: int = 0, **kw):
    return new_preference_model(kind, tiny_backbone(tok, seed), **kw).eval()


# ---------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_score_matrices_skew_symmetric_zero_diagonal(kind, tok):
    model = tiny(kind, tok, seed=1)
    mats = model.score_matrices(tok, PROMPTS, RESPONSES, batch_size=3)
    assert [m.shape for m in mats] == [(4, 4), (3, 3)]
    for m in mats:
        torch.testing.assert_close(m, -m.T)
        assert torch.all(m.diagonal() == 0)
        assert m.abs().max() > 1e-6  # a random model still tells responses apart
        p = torch.sigmoid(m)
        torch.testing.assert_close(p + p.T, torch.ones_like(p))


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_score_matrices_do_not_depend_on_batch_size(kind, tok):
    model = tiny(kind, tok, seed=2)
    a = model.score_matrices(tok, PROMPTS, RESPONSES, batch_size=1)
    b = model.score_matrices(tok, PROMPTS, RESPONSES, batch_size=64)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_pair_logits_agree_with_score_matrix(kind, tok):
    """The training objective and the scorer read the same number: logit(chosen > rejected) = S[c, r]."""
    model = tiny(kind, tok, seed=3)
    s = model.score_matrices(tok, PROMPTS[:1], RESPONSES[:1], batch_size=8)[0]
    pairs = [PreferencePair(PROMPTS[0], RESPONSES[0][i], RESPONSES[0][j]) for i, j in [(0, 1), (2, 3), (3, 0)]]
    with torch.no_grad():
        logits = model.pair_logits(tok, pairs)
    torch.testing.assert_close(logits, torch.stack([s[0, 1], s[2, 3], s[3, 0]]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_round_trip_and_kind_checks(kind, tok, tmp_path):
    model = tiny(kind, tok, seed=4)
    model.save_pretrained(tmp_path / kind)
    tok.save_pretrained(tmp_path / kind)
    loaded = load_preference_model(kind, str(tmp_path / kind)).eval()
    for x, y in zip(model.score_matrices(tok, PROMPTS, RESPONSES, 8), loaded.score_matrices(tok, PROMPTS, RESPONSES, 8)):
        torch.testing.assert_close(x, y)
    for other in KINDS:
        if other != kind:
            with pytest.raises(ModelLoadError, match=f"'{kind}' checkpoint, not '{other}'"):
                load_preference_model(other, str(tmp_path / kind))


def test_unknown_kind_refused(tok):
    with pytest.raises(ValueError, match="unknown preference-model kind 'rm'"):
        new_preference_model("rm", tiny_backbone(tok))


# ---------------------------------------------------------------- BT


def test_bt_score_matrix_by_hand():
    """r = [0.5, -1.0, 2.0]: S[i, j] = r_i - r_j."""
    s = reward_score_matrix(torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(s, torch.tensor([[0.0, 1.5, -1.5], [-1.5, 0.0, -3.0], [1.5, 3.0, 0.0]]))


def test_gpm_k1_with_v_r1_equals_bt():
    """k = 1, v = [r, 1], lam = 1 gives the BT matrix r_i - r_j exactly (docs/methods.md §2.2, A.1)."""
    r = torch.tensor([0.3, -2.0, 1.25, 0.0])
    v = torch.stack([r, torch.ones(4)], dim=1)
    torch.testing.assert_close(score_matrix(v, torch.tensor([1.0])), reward_score_matrix(r))


def test_bt_loss_by_hand():
    """-log sigmoid(r_w - r_l): r_w - r_l = 0 -> log 2; = 2 -> log(1 + e^-2) = 0.126928."""
    got = preference_nll(torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(got, torch.tensor([0.693147, 0.126928]), rtol=0, atol=1e-6)


def test_bt_checkpoint_is_a_sequence_classification_model(tok, tmp_path):
    """Our BT checkpoint loads as AutoModelForSequenceClassification and gives the same reward."""
    model = tiny("bt", tok, seed=5)
    model.save_pretrained(tmp_path / "bt")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "bt")).eval()
    assert hf.config.num_labels == 1
    ids, _ = encode_exchange(tok, PROMPTS[0], RESPONSES[0][0])
    ids = torch.tensor([ids])
    with torch.no_grad():
        ours = model(ids, torch.ones_like(ids))[0, 0]
        theirs = hf(input_ids=ids).logits[0, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_reward_model_without_meta_loads_as_bt_only(tok, tmp_path):
    """A TRL-style reward model (no preference_model.json) is a BT model; as 'pairwise' it is refused."""
    model = tiny("bt", tok, seed=6)
    model.save_pretrained(tmp_path / "trl")
    (tmp_path / "trl" / META_FILE).unlink()
    assert isinstance(load_preference_model("bt", str(tmp_path / "trl")), RewardModel)
    with pytest.raises(ModelLoadError, match="no preference_model.json saying it is a 'pairwise' model"):
        load_preference_model("pairwise", str(tmp_path / "trl"))


def test_reward_model_with_wrong_head_refused(tok, tmp_path):
    model = RewardModel(tiny_backbone(tok), num_labels=3)
    model.save_pretrained(tmp_path / "mo")
    with pytest.raises(ModelLoadError, match="score head of 3 outputs; a 'bt' model has 1"):
        load_preference_model("bt", str(tmp_path / "mo"))


def test_gpm_checkpoint_refused_as_bt(tok, tmp_path):
    """A published GPM (no meta file) has no score head: refused as BT with a message saying so."""
    gpm = tiny("gpm", tok, k=2)
    gpm.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / META_FILE).unlink()
    with pytest.raises(ModelLoadError, match="no score.weight: not a reward-model checkpoint"):
        load_preference_model("bt", str(tmp_path / "g"))


# ---------------------------------------------------------------- the scorer on a published GPM


def test_scorer_on_published_layout_matches_hand_computation(tok, tmp_path):
    """scorer.kind=gpm, scorer.model=<published dir>: scores = v_i^T R(x)^T v_j / tau computed from the weights."""
    k, hidden = 2, 64
    torch.manual_seed(11)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, pad_token_id=tok.pad_token_id)
    lm = LlamaForCausalLM(cfg).eval()
    vh, ph = torch.randn(2 * k, hidden), torch.randn(k, hidden)
    state = {n: t.contiguous() for n, t in lm.state_dict().items() if n.startswith("model.")}
    state.update({"value_head.weight": vh, "prompt_head.weight": ph})
    out = tmp_path / "pub"
    out.mkdir()
    cfg.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"))
    tok.save_pretrained(out)

    scorer = load_scorer("gpm", str(out), batch_size=2, k=2)
    got = scorer.score(PROMPTS[:1], RESPONSES[:1])[0]

    seqs = [encode_exchange(tok, PROMPTS[0], r) for r in RESPONSES[0]]
    with torch.no_grad():
        h = [lm.model(input_ids=torch.tensor([ids])).last_hidden_state[0] for ids, _ in seqs]
    v = F.normalize(torch.stack([x[-1] for x in h]) @ vh.T, dim=-1)
    lam = torch.softmax(ph @ h[0][seqs[0][1] - 1], dim=-1)
    rot = torch.zeros(2 * k, 2 * k)
    for l in range(k):
        rot[2 * l, 2 * l + 1], rot[2 * l + 1, 2 * l] = -lam[l], lam[l]
    expected = torch.stack([torch.stack([v[i] @ rot.T @ v[j] for j in range(4)]) for i in range(4)]) / 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scorer.probabilities(PROMPTS[:1], RESPONSES[:1])[0], torch.sigmoid(expected),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelLoadError, match="k=2\\) but scorer k=1"):
        load_scorer("gpm", str(out), batch_size=2, k=1)


# ---------------------------------------------------------------- scoring cost


def count_sequences(model) -> list[int]:
    seen = []
    model.model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    return seen


@pytest.mark.parametrize("kind,cost", [("gpm", lambda k: k), ("bt", lambda k: k), ("pairwise", lambda k: k * (k - 1))])
def test_forward_passes_per_matrix(kind, cost, tok):
    """K sequences for the GPM and BT, K(K-1) for the pairwise model (docs/methods.md §2.2, cost)."""
    model = tiny(kind, tok)
    seen = count_sequences(model)
    model.score_matrices(tok, PROMPTS[:1], RESPONSES[:1], batch_size=1000)
    assert sum(seen) == cost(len(RESPONSES[0]))


# ---------------------------------------------------------------- pairwise


def test_pairwise_encoding_holds_both_responses(tok):
    ids, a_end = encode_pair(tok, PROMPTS[0], "red sweet", "hmm stuff")
    assert ids.count(tok.eos_token_id) >= 2 and ids[-1] == tok.eos_token_id and ids[a_end] == tok.eos_token_id
    assert tok.decode(ids[:a_end]).endswith("red sweet")
    assert "red sweet" in tok.decode(ids) and tok.decode(ids).index("red sweet") < tok.decode(ids).index("hmm stuff")


def test_symmetrised_by_hand():
    f = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5], [3.0, -0.5, 0.0]])
    torch.testing.assert_close(symmetrised(f), torch.tensor([[0.0, 0.5, -2.0], [-0.5, 0.0, 0.5], [2.0, -0.5, 0.0]]))


def test_order_robust_nll_by_hand():
    """f(w, l) = 1, f(l, w) = -1: (log(1 + e^-1) + log(1 + e^-1)) / 2 = 0.313262;
    f(w, l) = 1, f(l, w) = 1 (order bias): (0.313262 + 1.313262) / 2 = 0.813262."""
    got = order_robust_nll(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(got, torch.tensor([0.313262, 0.813262]), rtol=0, atol=1e-6)


@pytest.mark.slow  # trains a pairwise model: about 40 s
def test_pairwise_trained_with_both_orders_is_order_consistent(tok, world):
    """After training on both orders, P(A > B) + P(B > A) is close to 1 on held-out pairs *before* the
    symmetrisation the scorer applies, and the model learned the preference.  On this machine kind, seeds 0-4
    of the split and head: gap 0.075-0.087, held-out accuracy 0.805-0.858 (at lr 3e-3 and 60 steps it was
    0.585-0.780: too erratic for a fixed bar)."""
    pairs, _ = load_pairs(str(Path(world.pairs) / "train.jsonl"))
    random.Random(0).shuffle(pairs)
    train, test = pairs[:2000], pairs[2000:2400]
    torch.manual_seed(0)  # the head's initialisation
    model = new_preference_model("pairwise", load_backbone(world.policy))
    train_preference_model(model, tok, train, steps=150, batch_size=16, lr=1e-3, seed=0)
    with torch.no_grad():
        f_ab = model.ordered_logits(tok, [p.prompt for p in test], [p.chosen for p in test], [p.rejected for p in test], 256)
        f_ba = model.ordered_logits(tok, [p.prompt for p in test], [p.rejected for p in test], [p.chosen for p in test], 256)
    gap = (torch.sigmoid(f_ab) + torch.sigmoid(f_ba) - 1).abs().mean().item()
    assert gap < 0.15, gap
    assert accuracy((f_ab - f_ba) / 2) > 0.7
    report = accuracy_report(model, tok, test)
    assert report["pairs"] == 400 and report["accuracy"] == pytest.approx(accuracy((f_ab - f_ba) / 2))


def test_gpm_difference_init_reads_the_top_directions_of_the_pair_differences(tok, world):
    """init_gpm_head: the 2k value-head rows keep the random rows' mean norm and point along the top 2k
    generalized eigenvectors of (A, B), A the pair differences' second moment, B the states' (+ ridge), as
    scipy's independent solver finds them, two to a block, each block oriented so that the pairs' mean score
    in it is >= 0, the gate uniform; a pair's two embeddings then differ far more than from a random head."""
    import scipy.linalg

    from selfplay.models.training import GPM_INIT_RIDGE, init_gpm_head, last_features
    from selfplay.world import cyclic

    pairs = cyclic.make_dataset("no_honesty", 60, seed=0)  # each pair: one body, two marker words
    torch.manual_seed(0)
    model = new_preference_model("gpm", load_backbone(world.policy), k=2, gate=False).eval()
    random_rows = model.value_head.weight.detach().clone()
    init_gpm_head(model, tok, pairs, batch_size=16, seed=0)
    w = model.value_head.weight.detach().double()
    assert w.norm(dim=1).tolist() == pytest.approx([random_rows.norm(dim=1).mean().item()] * 4, rel=1e-5)
    prompts = [p.prompt for p in pairs]
    h = last_features(model, tok, prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], 16)
    h = h.double().numpy()
    d = h[:60] - h[60:]
    a, b = d.T @ d / 60, h.T @ h / 120
    b += GPM_INIT_RIDGE * b.diagonal().mean() * torch.eye(b.shape[0], dtype=torch.float64).numpy()
    _, vecs = scipy.linalg.eigh(a, b)
    top = F.normalize(torch.from_numpy(vecs[:, ::-1][:, :4].copy()).T, dim=1)
    cosines = (F.normalize(w, dim=1) @ top.T).abs()  # row i against eigenvector j
    for block in (0, 1):  # a block holds its two eigenvectors, in either order
        rows = slice(2 * block, 2 * block + 2)
        pairing = cosines[rows, rows]
        assert max(pairing.diagonal().min(), pairing.flip(1).diagonal().min()).item() == pytest.approx(1.0, abs=1e-4)
    # each block is oriented so that the pairs' mean score in it is not negative
    v = F.normalize(torch.from_numpy(h) @ w.T, dim=1)
    per_block = (v[:60, 0::2] * v[60:, 1::2] - v[:60, 1::2] * v[60:, 0::2]).mean(0)
    assert (per_block >= 0).all(), per_block

    def gap(rows: torch.Tensor) -> float:  # |W d| / |W h|: how much of the embedding the pair difference is
        return float(torch.from_numpy(d @ rows.T.numpy()).norm(dim=1).mean()
                     / torch.from_numpy(h @ rows.T.numpy()).norm(dim=1).mean())

    assert gap(w) > 3 * gap(random_rows.double())  # 0.15 against 0.03 on the medium cyclic data here

    gated = new_preference_model("gpm", load_backbone(world.policy), k=2, gate=True).eval()
    init_gpm_head(gated, tok, pairs, batch_size=16, seed=0)  # the gate starts uniform: lambda = 1/k everywhere
    with torch.no_grad():
        _, lam = gated.embed_all(tok, prompts[:4], [[p.chosen] for p in pairs[:4]], batch_size=4)
    assert lam.flatten().tolist() == pytest.approx([0.5] * 8)


@pytest.mark.parametrize(("schedule", "expected"), [("constant", [0.5, 1.0, 1.0, 1.0]),
                                                    ("linear", [0.5, 1.0, 1.0, 0.5])])
def test_train_preference_model_follows_its_schedule(monkeypatch, schedule, expected):
    """4 steps, warm-up 0.5 (2 steps: 1/2, 1), then constant, or linear from 1 over the last 2 steps (1, 1/2):
    the learning-rate factor per step that training hands the optimiser."""
    import selfplay.models.training as training

    seen = {}

    def record(model, step_loss, steps, lr, schedule):
        seen["factors"] = [schedule(s) for s in range(steps)]
        return [0.0] * steps

    monkeypatch.setattr(training, "minimize", record)
    train_preference_model(torch.nn.Linear(1, 1), None, [], steps=4, batch_size=1, lr=1e-3, seed=0,
                           warmup_ratio=0.5, schedule=schedule)
    assert seen["factors"] == pytest.approx(expected)
