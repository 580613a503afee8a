"""The GPM (docs/methods.md §2.2, [GPM] sec. 4, addendum A.1): score algebra, the gate, and checkpoints.

Sign convention under test ([GPM] eq. 4.2 = A.1):
    s(y_i > y_j | x) = v_i^T R(x)^T v_j = sum_l lam_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l]),
    R[2l, 2l+1] = -lam_l, R[2l+1, 2l] = +lam_l.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM

from selfplay.core.lm import ModelLoadError, ModelTrust
from selfplay.models.backbone import META_FILE
from selfplay.models.gpm import GPM, pair_scores, score_matrix
from selfplay.models.kinds import load_preference_model
from selfplay.models.preference_losses import preference_nll

HIDDEN = 64


def tiny_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=1, num_key_value_heads=1)


def tiny_gpm(k: int, gate: bool = True, tau: float = 0.1, seed: int = 0) -> GPM:
    torch.manual_seed(seed)
    return GPM(AutoModel.from_config(tiny_config()), k=k, gate=gate, tau=tau).eval()


def batch_inputs():
    """Three right-padded sequences of lengths 7, 5, 9 (pad id 0) and their prompt lengths 3, 2, 4."""
    lens, plens = [7, 5, 9], [3, 2, 4]
    g = torch.Generator().manual_seed(123)
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, :n] = torch.randint(1, 64, (n,), generator=g)
        mask[b, :n] = 1
    return ids, mask, torch.tensor(plens)


def rotation(lam: torch.Tensor) -> torch.Tensor:
    """R(x) of A.1 as an explicit (2k, 2k) matrix."""
    k = lam.shape[0]
    r = torch.zeros(2 * k, 2 * k, dtype=lam.dtype)
    for l in range(k):
        r[2 * l, 2 * l + 1] = -lam[l]
        r[2 * l + 1, 2 * l] = lam[l]
    return r


# ---------------------------------------------------------------- score algebra


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_score_matrix_skew_symmetric_zero_diagonal(k):
    """S = -S^T and S[i, i] = 0 for random unit v and any lam >= 0."""
    g = torch.Generator().manual_seed(10 + k)
    v = F.normalize(torch.randn(6, 2 * k, generator=g, dtype=torch.float64), dim=-1)
    lam = torch.rand(k, generator=g, dtype=torch.float64) * 3
    s = score_matrix(v, lam)
    assert s.shape == (6, 6)
    torch.testing.assert_close(s, -s.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(s), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    # and it is not trivially zero
    assert s.abs().max() > 1e-3
    # |s| <= max lam for unit vectors (each 2x2 block is a 90-degree rotation scaled by lam_l)
    assert s.abs().max() <= lam.max() + 1e-12


@pytest.mark.parametrize("k", [1, 2, 4])
def test_score_matrix_equals_explicit_operator(k):
    """S[i, j] = v_i^T R^T v_j with R built entry by entry as in A.1."""
    g = torch.Generator().manual_seed(20 + k)
    v = F.normalize(torch.randn(5, 2 * k, generator=g, dtype=torch.float64), dim=-1)
    lam = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
    expected = v @ rotation(lam).T @ v.T
    torch.testing.assert_close(score_matrix(v, lam), expected, rtol=0, atol=1e-12)


def test_k1_recovers_bradley_terry():
    """k = 1, v = [r, 1] (not normalised), lam = 1: s(i, j) = r_i * 1 - 1 * r_j = r_i - r_j.

    r = [0.5, -1.0, 2.0] ->
        S = [[ 0.0,  1.5, -1.5],
             [-1.5,  0.0, -3.0],
             [ 1.5,  3.0,  0.0]]
    """
    r = torch.tensor([0.5, -1.0, 2.0])
    v = torch.stack([r, torch.ones(3)], dim=1)
    s = score_matrix(v, torch.tensor([1.0]))
    expected = torch.tensor([[0.0, 1.5, -1.5], [-1.5, 0.0, -3.0], [1.5, 3.0, 0.0]])
    torch.testing.assert_close(s, expected)
    torch.testing.assert_close(s, r[:, None] - r[None, :])
    # with lam = 0.5 every score halves: s = lam (r_i - r_j)
    torch.testing.assert_close(score_matrix(v, torch.tensor([0.5])), 0.5 * expected)


def test_single_block_sign_by_hand():
    """k = 1, v_a = [1, 0], v_b = [0, 1], lam = 1: s(a, b) = 1*1 - 0*0 = +1, s(b, a) = 0*0 - 1*1 = -1."""
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = score_matrix(v, torch.tensor([1.0]))
    torch.testing.assert_close(s, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))


def test_cyclic_preferences_representable():
    """Three unit vectors at angles 0, 120, 240 degrees, k = 1, lam = 1:
    s(i, j) = cos(a_i) sin(a_j) - sin(a_i) cos(a_j) = sin(a_j - a_i).
    s(0 > 1) = sin(120) = sqrt(3)/2, s(1 > 2) = sin(120) = sqrt(3)/2, s(2 > 0) = sin(-240) = sqrt(3)/2:
    a strict cycle 0 > 1 > 2 > 0, which no scalar reward can give.
    """
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    v = torch.stack([ang.cos(), ang.sin()], dim=1)
    s = score_matrix(v, torch.tensor([1.0], dtype=torch.float64))
    h = math.sqrt(3) / 2
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        assert s[i, j].item() == pytest.approx(h)


@pytest.mark.parametrize("k", [1, 3])
def test_pair_scores_matches_score_matrix(k):
    """pair_scores(v_i, v_j, lam) row b = score_matrix(v, lam)[i_b, j_b] for a shared lam."""
    g = torch.Generator().manual_seed(30 + k)
    v = F.normalize(torch.randn(5, 2 * k, generator=g, dtype=torch.float64), dim=-1)
    lam = torch.rand(k, generator=g, dtype=torch.float64)
    s = score_matrix(v, lam)
    ii = torch.tensor([0, 1, 4, 2, 3, 3])
    jj = torch.tensor([1, 0, 2, 2, 0, 4])
    got = pair_scores(v[ii], v[jj], lam.expand(len(ii), k))
    torch.testing.assert_close(got, s[ii, jj], rtol=0, atol=1e-12)


def test_pair_scores_per_row_lambda():
    """Each row uses its own lam: k = 2, v_i = [1, 0, 0, 1], v_j = [0, 1, 1, 0]:
    block 0: v_i[0] v_j[1] - v_i[1] v_j[0] = 1*1 - 0*0 = 1
    block 1: v_i[2] v_j[3] - v_i[3] v_j[2] = 0*0 - 1*1 = -1
    lam = [0.7, 0.3] -> 0.7 - 0.3 = 0.4;  lam = [0.2, 0.8] -> 0.2 - 0.8 = -0.6.
    """
    vi = torch.tensor([[1.0, 0.0, 0.0, 1.0]] * 2)
    vj = torch.tensor([[0.0, 1.0, 1.0, 0.0]] * 2)
    lam = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    torch.testing.assert_close(pair_scores(vi, vj, lam), torch.tensor([0.4, -0.6]))


def test_gpm_pair_loss_values():
    """-log sigmoid(s / tau):  s = 0 -> log 2 = 0.693147;  s = 0.1, tau = 0.1 -> log(1 + e^-1) = 0.313262;
    s = -0.2, tau = 0.1 -> log(1 + e^2) = 2.126928."""
    got = preference_nll(torch.tensor([0.0, 0.1, -0.2]) / 0.1)
    torch.testing.assert_close(got, torch.tensor([math.log(2), math.log1p(math.exp(-1)), math.log1p(math.exp(2))]))


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("k", [1, 3])
def test_embed_unit_vectors_and_gate_simplex(k):
    gpm = tiny_gpm(k)
    ids, mask, plen = batch_inputs()
    with torch.no_grad():
        v, lam = gpm.embed(ids, mask, plen)
    assert v.shape == (3, 2 * k) and lam.shape == (3, k)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
    assert (lam >= 0).all()
    torch.testing.assert_close(lam.sum(-1), torch.ones(3))


def test_embed_without_gate_has_unit_lambdas():
    gpm = tiny_gpm(2, gate=False)
    assert gpm.prompt_head is None
    ids, mask, plen = batch_inputs()
    with torch.no_grad():
        _, lam = gpm.embed(ids, mask, plen)
    torch.testing.assert_close(lam, torch.ones(3, 2))


def test_embed_ignores_padding():
    """A sequence embedded alone equals the same sequence right-padded in a batch with a longer one."""
    gpm = tiny_gpm(2)
    ids, mask, plen = batch_inputs()
    with torch.no_grad():
        v_all, lam_all = gpm.embed(ids, mask, plen)
        v_one, lam_one = gpm.embed(ids[1:2, :5], mask[1:2, :5], plen[1:2])
    torch.testing.assert_close(v_one[0], v_all[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lam_one[0], lam_all[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate", [True, False])
def test_save_and_load_round_trip(tmp_path, gate):
    gpm = tiny_gpm(2, gate=gate, tau=0.25, seed=3)
    gpm.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / META_FILE).exists()
    loaded = GPM.from_pretrained(str(tmp_path / "ckpt")).eval()
    assert loaded.k == 2 and loaded.gate == gate and loaded.tau == 0.25
    ids, mask, plen = batch_inputs()
    with torch.no_grad():
        v0, l0 = gpm.embed(ids, mask, plen)
        v1, l1 = loaded.embed(ids, mask, plen)
    assert torch.equal(v0, v1)
    assert torch.equal(l0, l1)
    assert torch.equal(score_matrix(v0, l0[0]), score_matrix(v1, l1[0]))
    # tau can be overridden on load; the weights are unaffected
    assert GPM.from_pretrained(str(tmp_path / "ckpt"), tau=0.5).tau == 0.5


def write_published(path, k: int, seed: int = 7, gate: bool = True, drop_value_head: bool = False):
    """A checkpoint in the published layout (A.1), built without GPM.save_pretrained."""
    torch.manual_seed(seed)
    cfg = tiny_config()
    lm = LlamaForCausalLM(cfg)
    state = {n: t.contiguous() for n, t in lm.state_dict().items() if n.startswith("model.")}
    vh = torch.randn(2 * k, HIDDEN)
    ph = torch.randn(k, HIDDEN)
    if not drop_value_head:
        state["value_head.weight"] = vh
    if gate:
        state["prompt_head.weight"] = ph
    path.mkdir(parents=True)
    cfg.save_pretrained(path)
    save_file(state, str(path / "model.safetensors"))
    return lm, vh, ph


def test_published_layout_matches_hand_computation(tmp_path):
    """Load the hand-built checkpoint and compare with v = normalize(W_v h_last),
    lam = softmax(W_p h_prompt), s = v_i^T R^T v_j, where h comes from our own run of the backbone."""
    k = 2
    lm, vh, ph = write_published(tmp_path / "pub", k)
    assert not (tmp_path / "pub" / META_FILE).exists()
    gpm = GPM.from_pretrained(str(tmp_path / "pub")).eval()
    assert gpm.k == k and gpm.gate and gpm.tau == 0.1

    ids, mask, plen = batch_inputs()
    # Three responses to one prompt: give all three the same first plen tokens so the gate agrees.
    ids[:, :2] = ids[0, :2]
    plen = torch.tensor([2, 2, 2])
    with torch.no_grad():
        v, lam = gpm.embed(ids, mask, plen)
        got = score_matrix(v, lam[0])
        hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (3, T, H)
    last = [6, 4, 8]
    h_last = torch.stack([hidden[b, last[b]] for b in range(3)])
    h_prompt = hidden[0, 1]
    v_ref = F.normalize(h_last @ vh.T, dim=-1)
    lam_ref = torch.softmax(ph @ h_prompt, dim=-1)
    r = rotation(lam_ref)
    s_ref = torch.stack([torch.stack([v_ref[i] @ r.T @ v_ref[j] for j in range(3)]) for i in range(3)])
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lam[0], lam_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, s_ref, rtol=1e-5, atol=1e-5)
    # the gate's lambdas are the same for all three (same prompt prefix)
    torch.testing.assert_close(lam[1], lam[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lam[2], lam[0], rtol=1e-5, atol=1e-5)
    assert s_ref.abs().max() > 1e-4  # not a vacuous comparison


def test_published_layout_without_gate(tmp_path):
    write_published(tmp_path / "pub", k=1, gate=False)
    gpm = GPM.from_pretrained(str(tmp_path / "pub"), k=1)
    assert gpm.k == 1 and not gpm.gate and gpm.prompt_head is None


def test_mismatched_k_refused(tmp_path):
    write_published(tmp_path / "pub", k=2)
    with pytest.raises(ModelLoadError, match=r"value_head of size 4 \(k=2\) but scorer k=3"):
        GPM.from_pretrained(str(tmp_path / "pub"), k=3)


def test_missing_value_head_refused(tmp_path):
    write_published(tmp_path / "pub", k=2, drop_value_head=True)
    with pytest.raises(ModelLoadError, match="no value_head.weight"):
        GPM.from_pretrained(str(tmp_path / "pub"))


def test_directory_without_weights_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    tiny_config().save_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        GPM.from_pretrained(str(tmp_path / "empty"))


def test_a_pickled_checkpoint_loads_only_with_allow_pickle(tmp_path):
    """scorer.allow_pickle: pytorch_model.bin is read (torch's weights-only unpickler) where there is no
    safetensors file; without it the checkpoint is refused, naming the key."""
    gpm, ckpt = tiny_gpm(2, seed=3), tmp_path / "ckpt"
    gpm.save_pretrained(ckpt)
    torch.save(load_file(str(ckpt / "model.safetensors")), ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="pytorch_model.bin is pickle: scorer.allow_pickle=true loads it"):
        load_preference_model("gpm", str(ckpt))
    loaded = load_preference_model("gpm", str(ckpt), trust=ModelTrust(allow_pickle=True)).state_dict()
    assert all(torch.equal(loaded[n], t) for n, t in gpm.state_dict().items())


def test_a_backbone_of_its_own_code_loads_only_with_trust_remote_code(tmp_path):
    """scorer.trust_remote_code: a checkpoint whose config names an architecture in its own modeling file."""
    gpm, ckpt = tiny_gpm(2, seed=3), tmp_path / "ckpt"
    gpm.save_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type="selfplay_mine_base", auto_map={"AutoConfig": "modeling_mine.MineConfig",
                                                             "AutoModel": "modeling_mine.MineModel"})
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "modeling_mine.py").write_text(
        "from transformers import LlamaConfig, LlamaModel\n\n\nclass MineConfig(LlamaConfig):\n"
        "    model_type = 'selfplay_mine_base'\n\n\nclass MineModel(LlamaModel):\n    config_class = MineConfig\n")
    with pytest.raises(ModelLoadError, match="has no usable config.json"):
        load_preference_model("gpm", str(ckpt))
    loaded = load_preference_model("gpm", str(ckpt), trust=ModelTrust(trust_remote_code=True))
    assert type(loaded.model).__name__ == "MineModel"
    assert all(torch.equal(loaded.state_dict()[n], t) for n, t in gpm.state_dict().items())


def test_odd_value_head_refused(tmp_path):
    lm = LlamaForCausalLM(tiny_config())
    state = {n: t.contiguous() for n, t in lm.state_dict().items() if n.startswith("model.")}
    state["value_head.weight"] = torch.randn(3, HIDDEN)
    (tmp_path / "odd").mkdir()
    tiny_config().save_pretrained(tmp_path / "odd")
    save_file(state, str(tmp_path / "odd" / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="3 rows, expected an even 2k"):
        GPM.from_pretrained(str(tmp_path / "odd"))
