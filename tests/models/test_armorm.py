"""ArmoRM read natively (issue 27): a tiny random Llama saved in ArmoRM's published layout, its config.json as the hub
has it (auto_map to a modeling_custom.py that must never run), scored by our loader and by the authors' forward
re-derived here from their code (the hub's modeling_custom.py, RLHF-Reward-Modeling armo-rm/stage-2_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from selfplay.core.lm import ModelLoadError
from selfplay.models.kinds import load_preference_model
from selfplay.models.kinds import attribute_names
from selfplay.models.preference_scorer import load_scorer

# Llama 3's chat template as Meta-Llama-3-8B-Instruct's tokenizer_config.json (and ArmoRM's) carries it
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[PAD]"]
WORDS = "what are some synonyms for the word beautiful nicely handsome stunning gorgeous pretty elegant sorry i cannot"
PROMPTS = [[{"role": "user", "content": 'What are some synonyms for the word "beautiful"?'}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say sorry."},
            {"role": "assistant", "content": "Sorry."}, {"role": "user", "content": "Again, more elegant."}]]
RESPONSES = [["Nicely, Beautifully, Handsome, Stunning", "Gorgeous", "Sorry i cannot answer this."],
             ["Sorry, truly sorry: i cannot be more elegant, nor more gorgeous, nor more pretty."]]
OBJECTIVES, HIDDEN, GATE_WIDTH, GATE_DEPTH, TEMPERATURE = 19, 32, 24, 3, 10


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Llama 3's special tokens, pad and eos as ArmoRM's (``[PAD]``,
    ``<|end_of_text|>``) and its chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([WORDS, "assistant user system"] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="[PAD]", additional_special_tokens=SPECIALS[2:5])
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


def armorm_checkpoint(path: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> str:
    """A random ArmoRM in the hub's layout: ``model.*``, ``regression_layer.weight`` [19, H] (no bias),
    ``gating.layers.{0..3}``, ``gating.logit_scale``, ``reward_transform_matrix`` [19, 19] (identity with the
    verbosity row's penalties subtracted, as stage-2 builds it); the hub's config.json keys at a tiny size, and a
    modeling_custom.py that fails if anything imports it."""
    torch.manual_seed(seed)
    tokenizer = llama3_tokenizer()
    backbone = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    state = {f"model.{n}": t for n, t in backbone.state_dict().items()}
    state["regression_layer.weight"] = torch.randn(OBJECTIVES, HIDDEN) * 0.3
    sizes = [HIDDEN] + [GATE_WIDTH] * GATE_DEPTH + [OBJECTIVES]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        state[f"gating.layers.{i}.weight"], state[f"gating.layers.{i}.bias"] = torch.randn(b, a), torch.randn(b)
    state["gating.logit_scale"] = torch.tensor([1.7])
    transform = torch.eye(OBJECTIVES)
    transform[4, :] -= torch.rand(OBJECTIVES) * 0.9
    state["reward_transform_matrix"] = transform
    path.mkdir(parents=True)
    save_file({n: t.to(dtype).contiguous() for n, t in state.items()}, str(path / "model.safetensors"))
    config = {**backbone.config.to_dict(), "auto_map": {
        "AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
        "architectures": ["LlamaForRewardModelWithGating"], "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "use_cache": False, "torch_dtype": "float32",
        "num_objectives": OBJECTIVES, "gating_temperature": TEMPERATURE, "gating_hidden_dim": GATE_WIDTH,
        "gating_n_hidden": GATE_DEPTH}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "modeling_custom.py").write_text("raise SystemExit('ArmoRM remote code ran')\n")
    tokenizer.save_pretrained(path)
    return str(path)


def authors_forward(path: str, messages: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards (19,), score) of one conversation as the hub's LlamaForRewardModelWithGating.forward computes them,
    batch of one, from the raw tensors: the last token's hidden state through the regression layer; the gate at the
    last occurrence of <|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n; score = sum(gate * (r @ A))."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    state = load_file(str(Path(path) / "model.safetensors"))
    config = json.loads((Path(path) / "config.json").read_text())
    backbone = LlamaModel(LlamaConfig(**{k: v for k, v in config.items() if k not in ("auto_map", "architectures")}))
    backbone.load_state_dict({n[6:]: t.float() for n, t in state.items() if n.startswith("model.")})
    backbone.eval()
    ids = tokenizer.apply_chat_template(messages, tokenize=False)  # the model card: the whole conversation
    ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hidden = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    rewards = hidden[-1] @ state["regression_layer.weight"].float().T
    pattern = tokenizer.encode("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    gate_at = max(j for j in range(len(ids) - len(pattern) + 1) if ids[j:j + len(pattern)] == pattern)
    x = hidden[gate_at]
    for i in range(config["gating_n_hidden"] + 1):
        x = x @ state[f"gating.layers.{i}.weight"].float().T + state[f"gating.layers.{i}.bias"].float()
        if i < config["gating_n_hidden"]:
            x = torch.relu(x)
    gating = torch.softmax(x / config["gating_temperature"], dim=0) * state["gating.logit_scale"].float()[0]
    score = torch.sum(gating * (rewards @ state["reward_transform_matrix"].float()))
    return rewards, score


@pytest.fixture(scope="module")
def armorm(tmp_path_factory) -> str:
    return armorm_checkpoint(tmp_path_factory.mktemp("armorm") / "ArmoRM")


def test_rewards_and_score_match_the_authors_forward(armorm):
    """Padded batches of conversations of several lengths (a system prompt and an earlier turn included): every
    objective and the gated score within 1e-5 of the authors' one-at-a-time computation."""
    scorer = load_scorer("armorm", armorm, batch_size=3, dtype="float32")
    model, tok = scorer.model, scorer.tokenizer
    rewards, scores = model.outputs(tok, PROMPTS, RESPONSES, batch_size=3)
    expected = [authors_forward(armorm, [*p, {"role": "assistant", "content": r}])
                for p, group in zip(PROMPTS, RESPONSES) for r in group]
    torch.testing.assert_close(rewards, torch.stack([r for r, _ in expected]), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, torch.stack([s for _, s in expected]), atol=1e-5, rtol=0)
    assert not torch.allclose(scores, scores[0])  # the score depends on the response


def test_the_default_attributes_are_helpfulness_row_0_and_verbosity_row_4(armorm):
    scorer = load_scorer("armorm", armorm, batch_size=4, dtype="float32")
    assert scorer.attributes == ["helpfulness", "verbosity"] == attribute_names(armorm, "armorm")
    full, _ = scorer.model.outputs(scorer.tokenizer, PROMPTS, RESPONSES, batch_size=4)
    per_prompt = scorer.rewards(PROMPTS, RESPONSES)
    assert [r.shape for r in per_prompt] == [(3, 2), (1, 2)]
    torch.testing.assert_close(torch.cat(per_prompt), full[:, [0, 4]])


def test_attributes_select_and_name_rows(armorm):
    chosen = {"correctness": 1, "helpfulness": 9}
    scorer = load_scorer("armorm", armorm, batch_size=4, dtype="float32", attributes=chosen)
    assert scorer.attributes == ["correctness", "helpfulness"] == attribute_names(armorm, "armorm", chosen)
    full, _ = scorer.model.outputs(scorer.tokenizer, PROMPTS, RESPONSES, batch_size=4)
    torch.testing.assert_close(torch.cat(scorer.rewards(PROMPTS, RESPONSES)), full[:, [1, 9]])
    with pytest.raises(ModelLoadError, match=r"19 outputs \(rows 0..18\).*verbosity: 19"):
        load_preference_model("armorm", armorm, attributes={"verbosity": 19})
    with pytest.raises(ModelLoadError, match="no output named helpfulness"):
        attribute_names(armorm, "armorm", ["helpfulness"])


def test_the_score_matrix_is_the_gated_scores_difference(armorm):
    scorer = load_scorer("armorm", armorm, batch_size=2, dtype="float32")
    _, s = scorer.model.outputs(scorer.tokenizer, PROMPTS[:1], RESPONSES[:1], batch_size=2)
    (matrix,) = scorer.score(PROMPTS[:1], RESPONSES[:1])
    torch.testing.assert_close(matrix, s[:, None] - s[None, :])
    torch.testing.assert_close(scorer.probabilities(PROMPTS[:1], RESPONSES[:1])[0] + torch.sigmoid(matrix).T,
                               torch.ones(3, 3))


def test_bfloat16_weights_load_in_the_asked_dtype(tmp_path):
    path = armorm_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16)
    assert {p.dtype for p in load_scorer("armorm", path, 2, dtype="bfloat16").model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_scorer("armorm", path, 2, dtype="auto").model.parameters()} == {torch.float32}


def test_a_checkpoint_without_armorms_heads_is_refused_in_one_line(tmp_path, armorm):
    from safetensors.torch import load_file

    broken = tmp_path / "broken"
    (broken).mkdir()
    for f in Path(armorm).iterdir():
        if f.suffix != ".safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(Path(armorm) / "model.safetensors"))
    del state["gating.logit_scale"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="has no gating.logit_scale: not an ArmoRM checkpoint"):
        load_preference_model("armorm", str(broken))
