"""PairRM (LLM-Blender; Jiang, Ren & Lin, ACL 2023, arXiv:2306.02561), scored as ``llm-blender/PairRM`` scores
(docs/methods.md §2.5): a DeBERTa-v3 cross-encoder that reads the source and two candidates in one sequence.

The sequence of an ordered pair (A, B), as LLM-Blender's ``CrossCompareCollator`` and
``CrossCompareReranker._forward`` / ``cat_ids`` build it (llm_blender/pair_ranker/collator.py, ranker.py):

    [CLS]<|source|> x [SEP] [CLS]<|candidate1|> A [SEP] [CLS]<|candidate2|> B [SEP]

Each segment is tokenised on its own ([CLS] and [SEP] by the tokenizer), after any literal [SEP] in its text is
replaced by a space, and truncated on the right: the source to ``source_max`` = 1224 tokens, each candidate to
``candidate_max + (source_max - n_x) // 2`` = (2048 - n_x) // 2 tokens, n_x the source's length.  (The collator
takes n_x of the longest source in its batch; SPPO's scripts/rank.py calls ``Blender.rank`` one prompt per batch,
as we score.)  Candidates are tokenised with ``<|candidate|>``, then swapped for ``<|candidate1|>`` /
``<|candidate2|>``.

With h the last layer's states at the three prefix tokens and the head (``head_layer``, with biases)
f(x, c) = W2 tanh(W1 [h_x; h_c] + b1) + b2, n_tasks outputs:

    l(A, B) = mean_t (f(x, A) - f(x, B))_t          (the ranker's logits)
    S[A, B] = l(A, B) - l(B, A),   P(A > B | x) = sigmoid(S[A, B])

the log-odds ``Blender.compare`` returns in its default mode "[A,B]+[B,A]" (rank() of [A, B] through
get_scores_from_cmps, then score_A - score_B): no 1/2.  S is skew-symmetric with a zero diagonal; K responses
cost K(K-1) sequences.  SPPO's K-way aggregation of S: ``selfplay.models.preference_scorer.sppo_aggregate``.

Checkpoints: both published layouts are safetensors (model.safetensors: the backbone under ``pretrained_model.``
and ``head_layer.1`` / ``head_layer.4`` weight and bias):

- ``llm-blender/PairRM``: config.json is LLM-Blender's RankerConfig (ranker_type pairranker, model_name
  microsoft/deberta-v3-large, source_maxlength 1224, candidate_maxlength 412, n_tasks).  As LLM-Blender's
  load_ranker, the tokenizer and the backbone's config come from the base model (``scorer.tokenizer``; default
  its model_name), the four prefix tokens are added to the tokenizer, and the embedding has one row per token.
- ``llm-blender/PairRM-hf`` (pairrm_to_hf.ipynb): a DebertaV2Config with n_tasks and the prefix ids, the
  tokenizer (prefixes included) beside it; the lengths 1224 / 412 of the notebook's tokenize_pair.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from selfplay.core.lm import Messages, ModelLoadError, ModelTrust, load_tokenizer, prompt_text, resolve
from selfplay.data.pairs import PreferencePair
from selfplay.models.backbone import (PreferenceModel, at_positions, backbone_from_state, batched, check_kind,
                                      device_of, read_checkpoint)

PREFIXES = ("<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>")  # the collator's add_tokens order
HF_LENGTHS = (1224, 412)  # PairRM-hf: source_max_length, candidate_max_length of the notebook's tokenize_pair
BACKBONE = "pretrained_model."
HEAD = ("head_layer.1.weight", "head_layer.1.bias", "head_layer.4.weight", "head_layer.4.bias")


@dataclass(frozen=True)
class PairRMFormat:
    """PairRM's input: the ids of its four prefix tokens and its length limits in tokens."""

    source_id: int
    cand1_id: int
    cand2_id: int
    cand_id: int
    source_max: int
    candidate_max: int


def source_text(messages: Messages, source: str, template: PreTrainedTokenizerBase | None) -> str:
    """The source PairRM reads: ``last_turn``, the raw last user turn (LLM-Blender's examples); ``template``, the
    prompt in ``template``'s chat template ending with its assistant header (SPPO's scripts/rank.py)."""
    if source == "last_turn":
        return prompt_text(messages)
    return template.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_segment(tokenizer: PreTrainedTokenizerBase, prefix: str, text: str, max_length: int) -> list[int]:
    """[CLS] prefix text [SEP], truncated on the right to ``max_length`` tokens (the collator's encode_texts)."""
    return tokenizer((prefix + text).replace(tokenizer.sep_token, " "), max_length=max_length,
                     truncation=True)["input_ids"]


def encode_group(tokenizer: PreTrainedTokenizerBase, fmt: PairRMFormat, source: str,
                 candidates: list[str]) -> tuple[list[int], list[list[int]]]:
    """The source's ids and each candidate's, the candidates' limit widened by what the source leaves."""
    src = encode_segment(tokenizer, PREFIXES[0], source, fmt.source_max)
    limit = fmt.candidate_max + (fmt.source_max - len(src)) // 2
    return src, [encode_segment(tokenizer, PREFIXES[3], c, limit) for c in candidates]


def join_pair(fmt: PairRMFormat, src: list[int], a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
    """The ids of (x, A, B) and the positions of its three prefix tokens."""
    a = [fmt.cand1_id if t == fmt.cand_id else t for t in a]
    b = [fmt.cand2_id if t == fmt.cand_id else t for t in b]
    return src + a + b, [src.index(fmt.source_id), len(src) + a.index(fmt.cand1_id),
                         len(src) + len(a) + b.index(fmt.cand2_id)]


class PairRM(PreferenceModel):
    """A PairRM checkpoint as published: scores only (selfplay does not train one)."""

    kind = "pairrm"
    head_tensors = HEAD

    def __init__(self, backbone: nn.Module, n_tasks: int, fmt: PairRMFormat, source: str = "last_turn",
                 template: PreTrainedTokenizerBase | None = None):
        super().__init__(backbone)
        hidden = backbone.config.hidden_size
        self.fmt, self.source, self.template = fmt, source, template
        self.head_in = nn.Linear(2 * hidden, hidden)  # head_layer.1 (head_layer.0 and .3 are dropout)
        self.head_out = nn.Linear(hidden, n_tasks)  # head_layer.4

    def head(self, h_source: torch.Tensor, h_candidate: torch.Tensor) -> torch.Tensor:
        """f(x, c) (B, n_tasks) from the prefix states (B, H) each."""
        return self.head_out(torch.tanh(self.head_in(torch.cat([h_source, h_candidate], dim=-1))))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """l(A, B) (B,) for right-padded rows of (x, A, B) whose prefix tokens sit at ``positions`` (B, 3)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        h_x, h_a, h_b = (at_positions(hidden, positions[:, k]) for k in range(3))
        return (self.head(h_x, h_a) - self.head(h_x, h_b)).float().mean(-1)

    @torch.no_grad()
    def score_matrices(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[list[str]], batch_size: int
    ) -> list[torch.Tensor]:
        """S = L - L^T per prompt from L[i, j] = l(i, j) over the K(K-1) ordered pairs, ``batch_size`` a pass."""
        seqs, positions, index = [], [], []
        for p, (msgs, group) in enumerate(zip(prompts, responses)):
            src, cands = encode_group(tokenizer, self.fmt, source_text(msgs, self.source, self.template), group)
            for i, j in permutations(range(len(group)), 2):
                ids, at = join_pair(self.fmt, src, cands[i], cands[j])
                seqs.append(ids)
                positions.append(at)
                index.append((p, i, j))
        raw = [torch.zeros(len(g), len(g)) for g in responses]
        if seqs:
            device = device_of(self)
            at = torch.tensor(positions, device=device)
            logits = torch.cat([self(ids, mask, at[start:start + ids.shape[0]])
                                for start, ids, mask in batched(seqs, tokenizer, batch_size, device)]).cpu()
            for (p, i, j), value in zip(index, logits):
                raw[p][i, j] = value
        return [m - m.T for m in raw]

    def pair_logits(self, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair]) -> torch.Tensor:
        """S[chosen, rejected] per pair (selfplay.eval_pm's accuracy).  Returns (B,); no gradient."""
        mats = self.score_matrices(tokenizer, [p.prompt for p in pairs], [[p.chosen, p.rejected] for p in pairs],
                                   2 * len(pairs))
        return torch.stack([m[0, 1] for m in mats])


def _config_json(path: Path, name: str) -> dict[str, Any]:
    """The raw config.json (RankerConfig or DebertaV2Config); early PairRM snapshots name it ranker_config.json."""
    for file in ("config.json", "ranker_config.json"):
        if (path / file).exists():
            try:
                return json.loads((path / file).read_text())
            except json.JSONDecodeError as e:
                raise ModelLoadError(f"scorer model '{name}': {file} is not JSON: {e}") from e
    raise ModelLoadError(f"scorer model '{name}' has no config.json in {path}")


def ranker_base(path: Path, raw: dict[str, Any], tokenizer: str | None) -> str | None:
    """The base model of the RankerConfig layout: ``scorer.tokenizer`` where it names another place than the
    checkpoint, else the config's model_name (None where it names none)."""
    return tokenizer if tokenizer is not None and resolve(tokenizer) != str(path) else raw.get("model_name")


def backbone_source(name: str, tokenizer: str | None) -> str:
    """Where the Hugging Face config of a PairRM's backbone is: the base model for the RankerConfig layout (whose
    own config.json transformers would misread as DeBERTa v1), the checkpoint itself for -hf."""
    path = Path(resolve(name))
    raw = _config_json(path, name) if path.is_dir() else {}
    return (ranker_base(path, raw, tokenizer) or name) if "ranker_type" in raw else name


def _ranker_layout(path: Path, raw: dict[str, Any], name: str, tokenizer: str | None,
                   trust: ModelTrust) -> tuple[PretrainedConfig, PreTrainedTokenizerBase, PairRMFormat, int]:
    """llm-blender/PairRM: the base model's tokenizer plus the prefixes, its config with one embedding row per token."""
    if raw["ranker_type"] != "pairranker":
        raise ModelLoadError(f"scorer model '{name}' is an LLM-Blender '{raw['ranker_type']}' ranker, not PairRM's "
                             "'pairranker'")
    base = ranker_base(path, raw, tokenizer)
    if base is None:
        raise ModelLoadError(f"scorer model '{name}': its RankerConfig names no model_name; set scorer.tokenizer to "
                             "the base model PairRM was trained from (microsoft/deberta-v3-large)")
    tok = load_tokenizer(base, trust, chat_template=False)
    tok.add_tokens(list(PREFIXES))  # as CrossCompareCollator.__init__; a no-op where the tokenizer has them
    try:
        config = AutoConfig.from_pretrained(resolve(base), trust_remote_code=trust.trust_remote_code)
    except Exception as e:  # transformers raises OSError, ValueError, hub errors...
        raise ModelLoadError(f"scorer model '{name}': its base model '{base}' (scorer.tokenizer, default the "
                             f"RankerConfig's model_name) has no usable config.json: {e}") from e
    config.vocab_size = len(tok)  # build_ranker: resize_token_embeddings(len(tokenizer))
    lengths = [raw.get("source_maxlength"), raw.get("candidate_maxlength")]
    if not all(isinstance(n, int) and n > 2 for n in lengths):
        raise ModelLoadError(f"scorer model '{name}': its RankerConfig's source_maxlength / candidate_maxlength are "
                             f"{lengths}, expected token counts (PairRM: 1224 / 412)")
    fmt = PairRMFormat(*tok.convert_tokens_to_ids(list(PREFIXES)), *lengths)
    return config, tok, fmt, raw.get("n_tasks", 1)


def _hf_layout(path: Path, name: str, tokenizer: str | None,
               trust: ModelTrust) -> tuple[PretrainedConfig, PreTrainedTokenizerBase, PairRMFormat, int]:
    """llm-blender/PairRM-hf: a DebertaV2Config with the prefix ids, whose tokenizer must map the prefixes to them."""
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust.trust_remote_code)
    except Exception as e:
        raise ModelLoadError(f"scorer model '{name}' has no usable config.json: {e}") from e
    tok = load_tokenizer(tokenizer or name, trust, chat_template=False)
    expected = [config.source_prefix_id, config.cand1_prefix_id, config.cand2_prefix_id, config.cand_prefix_id]
    ids = tok.convert_tokens_to_ids(list(PREFIXES))
    if ids != expected:
        raise ModelLoadError(f"scorer model '{name}': its tokenizer maps {', '.join(PREFIXES)} to {ids} but config.json "
                             f"gives {expected}: use the tokenizer saved with the checkpoint")
    return config, tok, PairRMFormat(*ids, *HF_LENGTHS), getattr(config, "n_tasks", 1)


def _check_head(state: dict[str, torch.Tensor], hidden: int, n_tasks: int, name: str) -> None:
    """head_layer.1: Linear(2H, H), head_layer.4: Linear(H, n_tasks), with biases, or one line saying what is there."""
    missing = [n for n in HEAD if n not in state]
    if missing:
        groups = Counter(n.split(".")[0] for n in state)
        found = ", ".join(f"{g}.* ({c})" for g, c in sorted(groups.items()))
        raise ModelLoadError(f"scorer model '{name}' has no {', '.join(missing)} (its tensors: {found}): "
                             "not a PairRM checkpoint")
    expected = dict(zip(HEAD, [(hidden, 2 * hidden), (hidden,), (n_tasks, hidden), (n_tasks,)]))
    for n, shape in expected.items():
        if tuple(state[n].shape) != shape:
            raise ModelLoadError(f"scorer model '{name}': {n} has shape {list(state[n].shape)}, expected {list(shape)} "
                                 f"(hidden size {hidden}, n_tasks {n_tasks})")


def load_pairrm(name: str, tokenizer: str | None = None, trust: ModelTrust = ModelTrust(), source: str = "last_turn",
                template: str | None = None, dtype: torch.dtype = torch.float32) -> tuple[PairRM, PreTrainedTokenizerBase]:
    """Either published layout from a directory or hub name, with the tokenizer it reads.  ``tokenizer``: the base
    model (RankerConfig layout) or the checkpoint's tokenizer (-hf); None: the config's model_name / the directory.
    ``source`` (``scorer.source``) and ``template``: the tokenizer whose chat template formats the source (the
    policy's), needed for source ``template``; ``dtype``: ``scorer.dtype``."""
    path, state, meta = read_checkpoint(name, "scorer model", trust.allow_pickle)
    check_kind(meta, PairRM.kind, name)
    raw = _config_json(path, name)
    if "ranker_type" in raw:
        config, tok, fmt, n_tasks = _ranker_layout(path, raw, name, tokenizer, trust)
    elif "source_prefix_id" in raw:
        config, tok, fmt, n_tasks = _hf_layout(path, name, tokenizer, trust)
    else:
        raise ModelLoadError(f"scorer model '{name}': config.json is neither LLM-Blender's RankerConfig (ranker_type) "
                             "nor PairRM-hf's (source_prefix_id): not a PairRM checkpoint")
    _check_head(state, config.hidden_size, n_tasks, name)
    rows = [tuple(t.shape) for n, t in state.items() if n.startswith(BACKBONE) and n.endswith("word_embeddings.weight")]
    if rows and rows[0][0] != len(tok):
        raise ModelLoadError(f"scorer model '{name}' embeds {rows[0][0]} tokens but its tokenizer with PairRM's four "
                             f"prefix tokens has {len(tok)}: scorer.tokenizer must be the base model it was trained from")
    if source == "template" and template is None:
        raise ModelLoadError(f"scorer model '{name}': scorer.source=template formats the source with the policy's chat "
                             "template, but no policy tokenizer was given")
    model = PairRM(backbone_from_state(path, state, "scorer model", trust.trust_remote_code, dtype, BACKBONE, config),
                   n_tasks, fmt, source, load_tokenizer(template, trust) if source == "template" else None)
    model.head_in.weight.data.copy_(state[HEAD[0]])
    model.head_in.bias.data.copy_(state[HEAD[1]])
    model.head_out.weight.data.copy_(state[HEAD[2]])
    model.head_out.bias.data.copy_(state[HEAD[3]])
    return model.to(dtype), tok
