"""Per-sequence log-probs (the quantity every algorithm trains on), batching masks and model loading errors."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from selfplay.core.lm import (
    ModelLoadError,
    ModelTrust,
    encode_prompt,
    load_causal_lm,
    load_tokenizer,
    pad_sequences,
    prompt_text,
    resolve,
    response_batch,
    sequence_logprobs,
)

PAD = 0


@pytest.fixture(scope="module")
def tiny_lm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1)
    return LlamaForCausalLM(cfg).eval()


PROMPTS = [[5, 6, 7], [8, 9]]
RESPONSES = [[10, 11, 2], [12, 13, 14, 15, 2]]  # 2 plays EOS


def test_pad_sequences():
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long


def test_response_batch_masks_exactly_the_response():
    """Row 0: prompt 3 + response 3 (EOS last) = 6 tokens, padded to 7 -> loss mask at positions 3, 4, 5.
    Row 1: prompt 2 + response 5 = 7 tokens -> loss mask at positions 2..6 (EOS at 6 included)."""
    ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
    assert ids.tolist() == [[5, 6, 7, 10, 11, 2, PAD], [8, 9, 12, 13, 14, 15, 2]]
    assert attn.tolist() == [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
    assert loss.tolist() == [[0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]]
    for b, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        assert loss[b].sum().item() == len(r)  # every response token, EOS included
        assert loss[b, : len(p)].sum().item() == 0  # never the prompt
        assert ids[b][loss[b].bool()].tolist() == r  # the masked tokens are the response
    assert (loss <= attn).all()  # never padding


def test_sequence_logprobs_manual_sum(tiny_lm):
    """log pi(y|x) = sum over response positions t of log_softmax(logits[t-1])[token t], computed here
    one sequence and one position at a time, unpadded."""
    ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
    with torch.no_grad():
        got = sequence_logprobs(tiny_lm, ids, attn, loss)
        expected = []
        for p, r in zip(PROMPTS, RESPONSES):
            seq = torch.tensor([p + r])
            logp = F.log_softmax(tiny_lm(input_ids=seq).logits[0].double(), dim=-1)
            total = 0.0
            for t in range(len(p), len(p) + len(r)):
                total += logp[t - 1, seq[0, t]].item()
            expected.append(total)
    assert got.shape == (2,)
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert (got < 0).all()


def test_sequence_logprobs_excludes_prompt(tiny_lm):
    """Changing a prompt token changes the response's conditional log-prob, but a prompt-only mask gives 0,
    and masking the first response token only gives exactly that token's log-prob."""
    ids, attn, loss = response_batch(PROMPTS[:1], RESPONSES[:1], PAD)
    with torch.no_grad():
        zero = sequence_logprobs(tiny_lm, ids, attn, torch.zeros_like(loss))
        first = loss.clone()
        first[0, 4:] = 0  # only position 3 (token 10)
        one = sequence_logprobs(tiny_lm, ids, attn, first)
        ref = F.log_softmax(tiny_lm(input_ids=ids).logits[0, 2], dim=-1)[10]
    assert zero.item() == 0.0
    assert one.item() == pytest.approx(ref.item(), abs=1e-5)


def test_padding_does_not_change_logprobs(tiny_lm):
    """Row 0 alone (no padding) equals row 0 padded next to a longer row 1."""
    with torch.no_grad():
        ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
        batched = sequence_logprobs(tiny_lm, ids, attn, loss)
        ids0, attn0, loss0 = response_batch(PROMPTS[:1], RESPONSES[:1], PAD)
        alone = sequence_logprobs(tiny_lm, ids0, attn0, loss0)
        # a different pad id must not matter either
        ids9, attn9, loss9 = response_batch(PROMPTS, RESPONSES, 63)
        batched9 = sequence_logprobs(tiny_lm, ids9, attn9, loss9)
    assert ids.shape[1] > ids0.shape[1]
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched9, batched, rtol=1e-5, atol=1e-5)


def test_sequence_logprobs_has_gradient(tiny_lm):
    ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
    tiny_lm.zero_grad()
    sequence_logprobs(tiny_lm, ids, attn, loss).sum().backward()
    g = tiny_lm.lm_head.weight.grad
    assert g is not None and g.abs().sum() > 0
    tiny_lm.zero_grad()


def test_load_causal_lm_round_trip(tiny_lm, tmp_path):
    tiny_lm.save_pretrained(tmp_path / "lm")
    loaded = load_causal_lm(str(tmp_path / "lm"))
    ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(loaded, ids, attn, loss), sequence_logprobs(tiny_lm, ids, attn, loss))
    assert load_causal_lm(str(tmp_path / "lm"), "bfloat16").dtype == torch.bfloat16


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_load_causal_lm_missing_path_names_it(tmp_path, offline):
    missing = str(tmp_path / "no-such-model")
    t = time.perf_counter()
    with pytest.raises(ModelLoadError) as e:
        load_causal_lm(missing)
    assert time.perf_counter() - t < 20
    msg = str(e.value)
    assert missing in msg
    assert "neither a local directory nor loadable from the hub" in msg


def test_load_causal_lm_missing_hub_name_offline(offline):
    with pytest.raises(ModelLoadError, match="policy model 'nobody-xyz/not-a-model-123' is neither"):
        load_causal_lm("nobody-xyz/not-a-model-123")


def test_load_causal_lm_existing_but_broken_dir(tmp_path, offline):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="exists but could not be loaded"):
        load_causal_lm(str(tmp_path / "broken"))


# ---- what loading may do: a model's own code, pickle weights (ModelTrust, issue 17) ---------------------------

OWN_CODE = '''from transformers import LlamaConfig, LlamaForCausalLM


class MineConfig(LlamaConfig):
    model_type = "selfplay_mine"


class MineForCausalLM(LlamaForCausalLM):
    config_class = MineConfig
'''


def own_code_model(model, path) -> str:
    """``model`` saved as an architecture transformers does not know: its config's model_type and auto_map
    name classes in the directory's own modeling file, which only trust_remote_code loads."""
    import json

    model.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="selfplay_mine", auto_map={"AutoConfig": "modeling_mine.MineConfig",
                                                        "AutoModelForCausalLM": "modeling_mine.MineForCausalLM"})
    (path / "config.json").write_text(json.dumps(config))
    (path / "modeling_mine.py").write_text(OWN_CODE)
    return str(path)


def test_a_models_own_code_runs_only_with_trust_remote_code(tiny_lm, tmp_path):
    path = own_code_model(tiny_lm, tmp_path / "mine")
    with pytest.raises(ModelLoadError, match="contains custom code"):
        load_causal_lm(path)
    loaded = load_causal_lm(path, trust=ModelTrust(trust_remote_code=True))
    assert type(loaded).__name__ == "MineForCausalLM"
    ids, attn, loss = response_batch(PROMPTS, RESPONSES, PAD)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(loaded, ids, attn, loss), sequence_logprobs(tiny_lm, ids, attn, loss))


def test_pickle_weights_load_only_with_allow_pickle(tiny_lm, tmp_path):
    """A directory with pytorch_model.bin only (as transformers 4 wrote them): never unpickled by default."""
    path = tmp_path / "pickled"
    path.mkdir()
    tiny_lm.config.save_pretrained(path)
    torch.save(tiny_lm.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="no file named model.safetensors"):
        load_causal_lm(str(path))
    loaded = load_causal_lm(str(path), trust=ModelTrust(allow_pickle=True)).state_dict()
    assert all(torch.equal(loaded[n], t) for n, t in tiny_lm.state_dict().items())


def test_a_tokenizers_own_code_runs_only_with_trust_remote_code(world, tmp_path):
    import json

    path = tmp_path / "tok"
    base = load_tokenizer(world.tokenizer)
    base.save_pretrained(path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="MineTokenizer",
                  auto_map={"AutoTokenizer": [None, "tokenization_mine.MineTokenizer"]})
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "tokenization_mine.py").write_text(f"from transformers import {type(base).__name__}\n\n\n"
                                               f"class MineTokenizer({type(base).__name__}):\n    pass\n")
    with pytest.raises(ModelLoadError, match="contains custom code"):
        load_tokenizer(str(path))
    loaded = load_tokenizer(str(path), ModelTrust(trust_remote_code=True))
    assert type(loaded).__name__ == "MineTokenizer" and len(loaded) == len(base)


def test_resolve_and_prompt_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    assert resolve("local") == str((tmp_path / "local").resolve())
    assert resolve("org/hub-name") == "org/hub-name"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "last"}]
    assert prompt_text(msgs) == "last"


# ---- masking and sequence log-probs with the world's tokenizer ----------------------------------------------

@pytest.fixture(scope="module")
def tok(world):
    return load_tokenizer(world.tokenizer)


def test_response_mask_covers_response_and_eos_only(tok, tiny_policy):
    """Row 0: templated prompt + 'hello world' + EOS; row 1: a shorter prompt + unfinished response (no EOS),
    right-padded.  The templated prompt itself contains the EOS id (the end of the user turn): the mask is
    by position, not by token, so that prompt EOS stays 0."""
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert eos != pad
    p0 = encode_prompt(tok, [{"role": "user", "content": "hi there"}])
    p1 = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    r0 = tok("hello world", add_special_tokens=False)["input_ids"] + [eos]
    r1 = tok("yes", add_special_tokens=False)["input_ids"]
    assert eos in p0  # the chat template closes the user turn with the EOS token
    ids, attn, mask = response_batch([p0, p1], [r0, r1], pad)
    width = ids.shape[1]
    assert width == max(len(p0) + len(r0), len(p1) + len(r1))
    for b, (p, r) in enumerate([(p0, r0), (p1, r1)]):
        expected = [0] * len(p) + [1] * len(r) + [0] * (width - len(p) - len(r))
        assert mask[b].tolist() == expected
        assert ids[b, len(p) + len(r):].eq(pad).all()
    assert ids[0][mask[0].bool()].tolist()[-1] == eos  # the trailing EOS is trained on
    assert ids[0, p0.index(eos)] == eos and mask[0, p0.index(eos)] == 0

    model = load_causal_lm(tiny_policy).eval()
    with torch.no_grad():
        got = sequence_logprobs(model, ids, attn, mask)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), dim=-1)
        # token t is predicted by the logits at t - 1
        by_hand = torch.stack([sum(logp[b, t - 1, ids[b, t]] for t in range(len(p), len(p) + len(r)))
                               for b, (p, r) in enumerate([(p0, r0), (p1, r1)])])
        torch.testing.assert_close(got, by_hand)
        # the trailing EOS counts: unmasking it removes exactly its log-prob
        no_eos = mask.clone()
        no_eos[0, len(p0) + len(r0) - 1] = 0
        drop = got[0] - sequence_logprobs(model, ids, attn, no_eos)[0]
        torch.testing.assert_close(drop, logp[0, len(p0) + len(r0) - 2, eos])
        assert abs(drop.item()) > 1e-3
        # the padding of row 1 does not matter: another pad-position token leaves its log-prob unchanged
        other = ids.clone()
        other[1, len(p1) + len(r1):] = 17
        torch.testing.assert_close(sequence_logprobs(model, other, attn, mask), got)


