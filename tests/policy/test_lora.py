"""LoRA on the learner: only the adapters train, pi_0 is the base with adapters off, the generators and
checkpoints get merged weights, and a checkpoint's adapter resumes the run."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from selfplay.config.loading import load_config
from selfplay.config.schema import TrainConfig
from selfplay.core.lm import load_causal_lm, response_batch, sequence_logprobs
from selfplay.policy.specs import LearnerSpec
from selfplay.policy.trainer import PolicyTrainer
from selfplay.policy.lora import ADAPTER_DIR, lora_layers
from tests.policy.test_trainer import pair_batch


def lora_learner(policy: str, model: str | None = None, algo: str = "dpo") -> PolicyTrainer:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig),
                          {"lr": 1e-2, "epochs": 1, "batch_size": 4, "micro_batch_size": 2,
                           "lora": {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}})
    algo_cfg = load_config([f"algo={algo}"]).algo
    return PolicyTrainer(LearnerSpec(model or policy, policy, "float32", cfg, algo_cfg, seed=0, initial=policy))


def logprobs_of(model: torch.nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprobs(model.eval(), *response_batch(batch.row_prompt_ids(), batch.response_ids, 0))


def merged(learner: PolicyTrainer) -> dict[str, torch.Tensor]:
    return {n: f() for n, (_, f) in learner._exported().items()}


def test_only_adapters_train_and_pi0_is_the_base_with_adapters_off(tiny_policy):
    base = load_causal_lm(tiny_policy, "float32")
    learner = lora_learner(tiny_policy)
    trainable = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if not p.requires_grad}
    batch = pair_batch("initial")
    learner.begin_iteration(batch)
    torch.testing.assert_close(batch.ref_logps, logprobs_of(base, batch), rtol=1e-5, atol=1e-5)
    for _ in range(3):
        learner.train_epoch(0, iteration=1)
    for n, p in learner.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n  # the base never moves
    again = pair_batch("initial")
    learner.begin_iteration(again)  # pi_0 is still the base, not the trained policy
    torch.testing.assert_close(again.ref_logps, logprobs_of(base, again), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(learner.logprobs(again), again.ref_logps, atol=1e-4)


def test_merged_weights_are_w_plus_scaled_ba_and_reset_gives_the_base(tiny_policy):
    base = load_causal_lm(tiny_policy, "float32").state_dict()
    learner = lora_learner(tiny_policy)
    learner.begin_iteration(pair_batch("initial"))
    learner.train_epoch(0, iteration=1)
    weights = merged(learner)
    assert weights.keys() == base.keys()  # the base model's Hugging Face names, nothing of the adapters
    layers = lora_layers(learner.model)
    assert sorted(layers) == ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj",
                              "model.layers.0.self_attn.v_proj"]
    q = layers["model.layers.0.self_attn.q_proj"]
    by_hand = base["model.layers.0.self_attn.q_proj.weight"] + (8.0 / 4) * (
        q.lora_B["default"].weight @ q.lora_A["default"].weight)
    torch.testing.assert_close(weights["model.layers.0.self_attn.q_proj.weight"], by_hand.detach())
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(weights["model.layers.0.self_attn.k_proj.weight"], base["model.layers.0.self_attn.k_proj.weight"])
    learner.restore_initial()  # DPA's start from pi_0: B = 0 again
    for n, t in merged(learner).items():
        assert torch.equal(t, base[n]), n


def test_checkpoint_holds_the_merged_model_and_the_adapter_which_resumes(tiny_policy, tmp_path):
    learner = lora_learner(tiny_policy)
    batch = pair_batch("initial")
    learner.begin_iteration(batch)
    learner.train_epoch(0, iteration=1)
    learner.save(tmp_path / "iter_1")
    current = learner.logprobs(batch)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "iter_1")
    torch.testing.assert_close(logprobs_of(saved, batch), current, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "iter_1" / ADAPTER_DIR / "adapter_config.json").exists()
    resumed = lora_learner(tiny_policy, model=str(tmp_path / "iter_1"))
    torch.testing.assert_close(resumed.logprobs(batch), current, rtol=1e-5, atol=1e-5)
    assert all(".lora_" in n for n, p in resumed.model.named_parameters() if p.requires_grad)
