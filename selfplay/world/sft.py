"""The world's supervised warm starts: next-token loss on (messages -> response) rows, the prompt masked."""

from __future__ import annotations

from collections.abc import Callable

import torch

from selfplay.core.lm import Messages, encode_prompt, response_batch
from selfplay.core.optim import minimize


def sft(model: torch.nn.Module, tokenizer, draw_batch: Callable[[], list[tuple[Messages, str]]], steps: int,
        lr: float) -> list[float]:
    """Next-token loss on ``draw_batch()``'s (messages -> response) rows with the prompt masked; warm-up, then
    linear decay."""
    def step_loss(_: int) -> torch.Tensor:
        batch = draw_batch()
        p_ids = [encode_prompt(tokenizer, messages) for messages, _ in batch]
        r_ids = [tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for _, response in batch]
        ids, attn, mask = response_batch(p_ids, r_ids, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()

    warmup_then_decay = lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps)
    return minimize(model, step_loss, steps, lr, warmup_then_decay)
