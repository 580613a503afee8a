"""Loading models and tokenizers by hub name or directory, chat templating, and
the per-sequence log-probabilities every algorithm trains on."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # transformers' model classes cost ~2 s to import: only the functions that load import them
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Messages = list[dict[str, str]]
PICKLE_WEIGHTS = "pytorch_model*.bin"  # transformers' pickle weights (and their shards): read with allow_pickle only


# float64 for the learner only (tests prove sharded = one process in it, where rounding cannot hide a bug)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be loaded; names the path and the reason."""


@dataclass(frozen=True)
class ModelTrust:
    """What loading one model may do besides reading JSON and safetensors (issue 17): run the model's own
    Python code (``trust_remote_code``) and unpickle its weights where it has no safetensors (``allow_pickle``).
    Both off unless the model's config section opts in (``policy.*`` / ``scorer.*``); every loader of that model
    gets the same one."""

    trust_remote_code: bool = False
    allow_pickle: bool = False

    @classmethod
    def of(cls, section) -> ModelTrust:
        """The opt-ins of a ``policy`` or ``scorer`` config section."""
        return cls(section.trust_remote_code, section.allow_pickle)

    def hf_kwargs(self) -> dict:
        """transformers' ``from_pretrained`` keywords: safetensors only (a pickle-only model is not found, never
        unpickled) unless pickle is allowed, when they are preferred and ``*.bin`` is the fallback."""
        return {"trust_remote_code": self.trust_remote_code, "use_safetensors": None if self.allow_pickle else True}


def _describe(name: str, what: str, err: Exception) -> ModelLoadError:
    if Path(name).expanduser().exists():
        return ModelLoadError(f"{what} '{name}' exists but could not be loaded: {err}")
    return ModelLoadError(
        f"{what} '{name}' is neither a local directory nor loadable from the hub "
        f"(offline or unknown name): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    )


def resolve(name: str) -> str:
    """Expand a local path (~, relative) and leave hub names alone."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def load_tokenizer(name: str, trust: ModelTrust = ModelTrust(), chat_template: bool = True) -> PreTrainedTokenizerBase:
    """The tokenizer ``name``, padding with EOS where it has no pad token.  ``chat_template=False`` accepts one
    without a chat template: an encoder judge (PairRM) that reads plain text, never the policy's format."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust.trust_remote_code)
    except Exception as e:  # transformers raises OSError, ValueError, HF hub errors...
        raise _describe(name, "tokenizer", e) from e
    if chat_template and tok.chat_template is None:
        raise ModelLoadError(f"tokenizer '{name}' has no chat template; selfplay applies the tokenizer's own template")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, dtype: str = "float32", trust: ModelTrust = ModelTrust()) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(resolve(name), dtype=DTYPES[dtype], **trust.hf_kwargs())
    except Exception as e:
        raise _describe(name, "policy model", e) from e


def prompt_text(messages: Messages) -> str:
    """The last user turn: what a judge of the embedded world reads."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """Token ids of the chat-templated prompt, ending with the assistant header."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_exchange(tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str) -> tuple[list[int], int]:
    """Ids of the templated (prompt, response) whose last token is EOS, and the prompt's length.

    The prompt part is the templated prompt with the generation header, so the
    hidden state at index ``prompt_len - 1`` summarises the prompt alone.  Memoised: a preference model's
    training sees the same pairs again every epoch, and templating is a third of its step time on the CPU.
    """
    ids, n = _encode_exchange(tokenizer, json.dumps(messages), response)
    return list(ids), n


@functools.lru_cache(maxsize=1 << 16)
def _encode_exchange(tokenizer: PreTrainedTokenizerBase, messages: str, response: str) -> tuple[tuple[int, ...], int]:
    prompt_ids = encode_prompt(tokenizer, json.loads(messages))
    ids = prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids.append(tokenizer.eos_token_id)
    return tuple(ids), len(prompt_ids)


def pad_sequences(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to (B, T) ids and the matching attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def response_batch(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, loss_mask), each (B, T); loss_mask is 1 on response tokens only."""
    ids, attn = pad_sequences([p + r for p, r in zip(prompts, responses)], pad_id)
    loss_mask = torch.zeros_like(attn)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        loss_mask[i, len(p) : len(p) + len(r)] = 1
    return ids, attn, loss_mask


def sequence_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x): the sum of response-token log-probs, prompt tokens masked.  Returns (B,)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # (B, T-1, V)
    targets = input_ids[:, 1:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up to float32; float64 kept
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * loss_mask[:, 1:]).sum(-1)
