"""A published GPM scores here as the authors' released example pipeline scores it (issue 27, part 1).

The reference below is re-derived from reading ``GPMPipeline`` and ``generate_high_dim_result_with_prompt`` in
general-preference/general-preference-model's gpm_example_usage.py (and ``generate_high_dim_result`` of its
rewardbench_utils.py for a checkpoint without the gate), step by step and independently of our code:

1. the whole conversation rendered by the chat template (no generation prompt), tokenised with special tokens,
   truncated at max_length, left-padded, its last column overwritten with EOS (mask 1);
2. position ids from the attention mask's cumulative sum; the base model's last hidden states;
3. v = normalize(value_head(h at the last non-pad position));
4. the gate's state at ``T - (len(full) - len(first message rendered alone)) - 1``;
5. R(x) with R[2l, 2l+1] = -softmax(prompt_head(h))_l, R[2l+1, 2l] = +softmax(...)_l, s = v_c R^T v_r
   (no gate: R with entries -1 / +1).

Each chat template is written in the style of the model family's own (Llama-3-Instruct: BOS in the template and
from the tokenizer, so two; Gemma-2-it: BOS twice and a trailing newline that becomes EOS, no system role;
Qwen2: a default system turn, no BOS), plus the embedded world's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModel, LlamaConfig, PreTrainedTokenizerFast

from selfplay.core.lm import load_tokenizer
from selfplay.models.gpm import GPM, encode_published

LLAMA3 = ("{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
          "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
          "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{'<start_of_turn>model\n'}}{% endif %}")
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + "
         "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# (template, bos, eos, specials, whether the tokenizer itself adds BOS)
STYLES = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|end_of_text|>",
               ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], True),
    "gemma2": (GEMMA2, "<bos>", "<eos>", ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], True),
    "qwen2": (QWEN2, None, "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False),
}
CORPUS = ["Describe the importance of reading books in today's digital age.", "Books remain crucial in the digital era.",
          "Tell me about apples and pears, briefly.", "Apples are sweet; pears are soft and grainy.", "You are terse.",
          "Explain rivers. Water flows downhill to the sea, carrying silt."] * 20

PLAIN = [{"role": "user", "content": "Describe the importance of reading books in today's digital age."}]
MULTI_TURN = [{"role": "user", "content": "Tell me about apples."}, {"role": "assistant", "content": "Apples are sweet."},
              {"role": "user", "content": "And pears, briefly?"}]
SYSTEM = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain rivers."}]
RESPONSES = ["Books remain crucial in the digital era, offering depth.", "Books are still useful.",
             "Pears are soft and grainy; apples are sweet.", "Water flows downhill to the sea, carrying silt."]


def styled_tokenizer(style: str, path) -> str:
    """A small byte-level BPE trained here, with the family's special tokens, BOS rule and chat template."""
    template, bos, eos, specials, adds_bos = STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token="<pad>" if style == "gemma2" else None)
    fast.chat_template = template
    fast.save_pretrained(path)
    return str(path)


def published_gpm(path, tokenizer_dir: str, k: int, gate: bool, seed: int, shards: bool = False) -> None:
    """The published layout: the base model's config, ``model.*`` + ``value_head.weight`` (+ ``prompt_head``),
    no meta file; with ``shards``, the weights split over two safetensors files and an index."""
    tok = load_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, architectures=["LlamaForCausalLM"])
    base = AutoModel.from_config(cfg)
    state = {f"model.{n}": t.contiguous() for n, t in base.state_dict().items()}
    state["value_head.weight"] = torch.randn(2 * k, 64) * 0.5
    if gate:
        state["prompt_head.weight"] = torch.randn(k, 64) * 2.0
    path.mkdir(parents=True)
    cfg.save_pretrained(path)
    tok.save_pretrained(path)
    if not shards:
        save_file(state, str(path / "model.safetensors"))
        return
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({n: state[n] for n in part}, str(path / file))
    import json
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, part in halves.items() for n in part}}))


@torch.no_grad()
def pipeline_embed(path: str, conversations: list[list[dict]], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 of the module docstring, on a batch: the unit embeddings and the gate's hidden states."""
    from safetensors.torch import load_file
    import os

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    tok.padding_side, tok.truncation_side = "left", "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    weights = {}
    for f in os.listdir(path):
        if f.endswith(".safetensors"):
            weights.update(load_file(os.path.join(path, f)))
    base = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template(c, tokenize=False) for c in conversations]
    inputs = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    inputs["input_ids"][:, -1] = tok.eos_token_id
    inputs["attention_mask"][:, -1] = 1
    mask = inputs["attention_mask"]
    position_ids = mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(mask == 0, 1)
    hidden = base(inputs["input_ids"], attention_mask=mask, position_ids=position_ids).last_hidden_state
    values = hidden @ weights["value_head.weight"].T
    eos = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1)
    v = F.normalize(values[torch.arange(len(texts)), eos], p=2, dim=-1)
    prompt_states = []
    for i, c in enumerate(conversations):
        first = tok(tok.apply_chat_template([c[0]], tokenize=False), max_length=max_length, truncation=True)
        full = tok(texts[i], max_length=max_length, truncation=True)
        response_len = len(full["input_ids"]) - len(first["input_ids"])
        prompt_states.append(hidden[i, hidden.size(1) - response_len - 1])
    return v, torch.stack(prompt_states)


def pipeline_score(path: str, v_c: torch.Tensor, v_r: torch.Tensor, h_prompt: torch.Tensor) -> torch.Tensor:
    """Step 5: s = v_c R(x)^T v_r per row."""
    from safetensors.torch import load_file
    import os

    weights = {}
    for f in os.listdir(path):
        if f.endswith(".safetensors"):
            weights.update(load_file(os.path.join(path, f)))
    d = v_c.shape[-1]
    if "prompt_head.weight" in weights:
        lam = torch.softmax(h_prompt @ weights["prompt_head.weight"].T, dim=-1)
    else:
        lam = torch.ones(v_c.shape[0], d // 2)
    r = torch.zeros(v_c.shape[0], d, d)
    for i in range(0, d, 2):
        r[:, i, i + 1] = -lam[:, i // 2]
        r[:, i + 1, i] = lam[:, i // 2]
    return torch.bmm(torch.bmm(v_c[:, None, :], r.transpose(1, 2)), v_r[:, :, None]).view(-1)


def official_matrix(path: str, prompt: list[dict], responses: list[str], max_length: int) -> torch.Tensor:
    """S[i, j] = s(y_i > y_j | x) by the authors' pipeline, each pair scored with row i's gate."""
    convs = [[*prompt, {"role": "assistant", "content": r}] for r in responses]
    v, h = pipeline_embed(path, convs, max_length)
    k = len(responses)
    rows = [pipeline_score(path, v[i].expand(k, -1), v, h[i].expand(k, -1)) for i in range(k)]
    return torch.stack(rows)


def ours(path: str, prompt: list[dict], responses: list[str], max_length: int | None = None) -> torch.Tensor:
    gpm = GPM.from_pretrained(path, max_length=max_length).eval()
    return gpm.score_matrices(load_tokenizer(path), [prompt], [responses], batch_size=3)[0] * gpm.tau


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, world) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokenizers")
    out = {style: styled_tokenizer(style, root / style) for style in STYLES}
    out["world"] = world.tokenizer
    return out


CASES = [(style, prompt) for style in ("llama3", "gemma2", "qwen2", "world")
         for prompt in ("plain", "multi_turn", "system") if not (style == "gemma2" and prompt == "system")]
PROMPTS = {"plain": PLAIN, "multi_turn": MULTI_TURN, "system": SYSTEM}


@pytest.mark.parametrize(("style", "prompt"), CASES)
@pytest.mark.parametrize(("k", "gate"), [(1, True), (2, True), (3, False), (4, True), (2, False)])
def test_scores_equal_the_authors_pipeline(tmp_path, tokenizers, style, prompt, k, gate):
    path = tmp_path / "gpm"
    published_gpm(path, tokenizers[style], k, gate, seed=k + 10 * gate, shards=(k == 4))
    want = official_matrix(str(path), PROMPTS[prompt], RESPONSES, 4096)
    got = ours(str(path), PROMPTS[prompt], RESPONSES)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert want.abs().max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("style", ["llama3", "qwen2"])
def test_truncation_as_the_pipeline(tmp_path, tokenizers, style):
    """A conversation longer than max_length is cut from the right and ends in EOS; both readings agree."""
    path = tmp_path / "gpm"
    published_gpm(path, tokenizers[style], 2, True, seed=5)
    long = ["Books remain crucial in the digital era, " * 6, "Apples are sweet; pears are soft and grainy. " * 5]
    n = len(encode_published(load_tokenizer(str(path)), PLAIN, long[1])[0])
    want = official_matrix(str(path), PLAIN, long, 30)
    got = ours(str(path), PLAIN, long, max_length=30)
    assert n > 30
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_tokens_as_the_authors_write_them(tokenizers):
    """Llama-3 and Gemma get two BOS tokens (template and tokenizer); Gemma's trailing newline and Llama-3's
    final end-of-turn become EOS; the gate reads the token that closes the first message."""
    for style, (_, bos, eos, _, adds_bos) in STYLES.items():
        tok = load_tokenizer(tokenizers[style])
        ids, n = encode_published(tok, PLAIN, "Books are still useful.")
        assert ids[-1] == tok.convert_tokens_to_ids(eos)
        assert (bos is not None and ids[:2] == [tok.convert_tokens_to_ids(bos)] * 2) == adds_bos
        closing = {"llama3": "<|eot_id|>", "gemma2": "\u010a", "qwen2": "\u010a"}[style]  # byte-level "\n" is \u010a
        assert tok.convert_ids_to_tokens(ids[n - 1]) == closing
    tok = load_tokenizer(tokenizers["gemma2"])
    ids, _ = encode_published(tok, PLAIN, "Books are still useful.")
    assert tok.convert_ids_to_tokens(ids[-2:]) == ["<end_of_turn>", "<eos>"]


def test_a_gpm_we_train_scores_the_same_in_their_pipeline(tmp_path, tokenizers):
    """Our own save (meta file and all) is a published-layout checkpoint their pipeline reads alike."""
    from selfplay.core.lm import load_tokenizer as load

    tok = load(tokenizers["world"])
    torch.manual_seed(0)
    base = AutoModel.from_config(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    gpm = GPM(base, k=2, gate=True)
    with torch.no_grad():
        gpm.prompt_head.weight.mul_(40)
    gpm.save_pretrained(tmp_path / "ours")
    tok.save_pretrained(tmp_path / "ours")
    prompt = [{"role": "user", "content": "Explain apples briefly."}]
    want = official_matrix(str(tmp_path / "ours"), prompt, RESPONSES[:3], 4096)
    torch.testing.assert_close(ours(str(tmp_path / "ours"), prompt, RESPONSES[:3]), want, rtol=0, atol=1e-4)


def test_loaded_in_bfloat16_scores_near_float32(tmp_path, tokenizers):
    """``scorer.dtype=bfloat16``: every weight in bf16, the scores within bf16's rounding of float32's."""
    path = tmp_path / "gpm"
    published_gpm(path, tokenizers["qwen2"], 2, True, seed=7)
    gpm = GPM.from_pretrained(str(path), dtype=torch.bfloat16).eval()
    assert {p.dtype for p in gpm.parameters()} == {torch.bfloat16}
    got = gpm.score_matrices(load_tokenizer(str(path)), [PLAIN], [RESPONSES], batch_size=4)[0] * gpm.tau
    torch.testing.assert_close(got, ours(str(path), PLAIN, RESPONSES), rtol=0, atol=0.05)
