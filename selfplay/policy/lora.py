"""LoRA adapters on the policy (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv
2106.09685, eq. 3): h = W x + (alpha / r) B A x on the target linear layers, W frozen, only A (r x in) and
B (out x r, zero at the start) trained.  Through PEFT.

The reference pi_0 is the same model with its adapters disabled (no second copy); the generators and the
checkpoints get the merged weights W + (alpha / r) B A under the base model's Hugging Face names, one tensor at
a time (``hf_tensors``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

ADAPTER_DIR = "adapter"  # inside iter_N/: the adapter alone (PEFT's layout), beside the merged model


def add_adapters(model: torch.nn.Module, lora: DictConfig, seed: int,
                 adapter_from: str | Path | None = None) -> torch.nn.Module:
    """``model`` with trainable LoRA adapters (``train.lora``) on its ``target_modules``, everything else frozen,
    A drawn from ``seed`` (so every rank of a sharded learner draws the same); with ``adapter_from`` (an
    ``iter_N/`` directory), the adapter weights saved there."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_from is not None:
        return PeftModel.from_pretrained(model, str(Path(adapter_from) / ADAPTER_DIR), is_trainable=True)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none")
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The adapted layers by their name in the base model (``model.layers.0.self_attn.q_proj``)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


def reset_adapters(model: torch.nn.Module) -> None:
    """Every adapter's B to 0, so the model is its base again (A, which multiplies B, is kept); in place, so
    on shards as well."""
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.zero_()


def hf_tensors(model: torch.nn.Module, full: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
               ) -> dict[str, tuple[torch.Tensor, Callable[[], torch.Tensor]]]:
    """The base model's Hugging Face names -> (its frozen tensor, a function computing the merged one,
    W + (alpha / r) B A where an adapter wraps it), so a caller materialises one at a time.  ``full`` makes a
    tensor whole (gathers a shard; every rank must call it alike)."""
    layers = lora_layers(model)
    out: dict[str, tuple[torch.Tensor, Callable[[], torch.Tensor]]] = {}
    for name, t in model.get_base_model().state_dict().items():
        if ".lora_" in name:
            continue
        hf = name.replace(".base_layer.", ".")
        owner = hf.rsplit(".", 1)[0]
        if owner in layers and hf.endswith(".weight"):
            out[hf] = (t, lambda t=t, layer=layers[owner]: merge(full(t), layer, full))
        else:
            out[hf] = (t, lambda t=t: full(t).detach())
    return out


@torch.no_grad()
def merge(weight: torch.Tensor, layer: torch.nn.Module, full: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """W + (alpha / r) B A (eq. 3), from the whole W and the layer's adapter, made whole by ``full``."""
    a, b = full(layer.lora_A["default"].weight), full(layer.lora_B["default"].weight)
    return weight + (layer.scaling["default"] * (b @ a)).to(weight.dtype)


def adapter_state(model: torch.nn.Module, full: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters' tensors, whole, under the model's own names (what ``save_pretrained(state_dict=...)`` takes)."""
    return {n: full(t).detach().cpu() for n, t in model.state_dict().items() if ".lora_" in n}


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
