"""Latent Preference Coding's parts ([LPC] sec. 3): the mixture, the KL term, the z-conditioned policy, the
losses, the heads' checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from selfplay.algorithms.dpo import DpoConfig, dpo_loss
from selfplay.algorithms.ipo import IpoConfig
from selfplay.algorithms.latent import LpcSettings, coded
from selfplay.algorithms.losses import categorical_kl
from selfplay.algorithms.registry import ALGORITHMS, resolve
from selfplay.algorithms.simpo import SimpoConfig
from selfplay.algorithms.unit import LossInputs
from selfplay.core.lm import load_causal_lm, response_batch, sequence_logprobs
from selfplay.policy.lpc import (
    LatentCodes,
    conditioned_logprobs,
    final_states,
    gumbel_softmax,
    last_positions,
    load,
    mixing_weight,
    mixture,
    save,
)


def test_the_mixture_is_the_posteriors_sample_at_g_0_and_the_priors_at_g_1():
    p, q = torch.randn(4, 8), torch.randn(4, 8)
    g = torch.Generator().manual_seed(3)
    from_prior, from_posterior = gumbel_softmax(p, 0.5, g), gumbel_softmax(q, 0.5, g)
    assert torch.equal(mixture(p, q, 0.0, 0.5, torch.Generator().manual_seed(3)), from_posterior)
    assert torch.equal(mixture(p, q, 1.0, 0.5, torch.Generator().manual_seed(3)), from_prior)
    half = mixture(p, q, 0.25, 0.5, torch.Generator().manual_seed(3))
    assert torch.allclose(half, 0.25 * from_prior + 0.75 * from_posterior)
    assert torch.allclose(half.sum(-1), torch.ones(4))


def test_g_rises_linearly_over_the_steps():
    assert [mixing_weight(s, 5) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert mixing_weight(0, 1) == 1.0


def test_the_kl_term_by_hand():
    """q = softmax([0, ln 3]) = (1/4, 3/4), p uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812..."""
    q = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])
    p = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    kl = categorical_kl(q, p)
    assert kl[0].item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-7)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    assert categorical_kl(torch.randn(3, 1), torch.randn(3, 1)).abs().max().item() < 1e-7  # one code: always 0


def test_the_lpc_unit_is_its_pair_loss_plus_lambda_kl():
    """LPC wraps dpo, ipo and simpo ([LPC] eqs. 8, 14, 13): the same examples, the base loss plus lambda KL,
    the base's metrics and lpc_kl; without codes the unit is the base itself."""
    from omegaconf import OmegaConf

    logps = torch.tensor([[-3.0, -4.0], [-5.0, -2.5]])
    x = LossInputs(logps, logps - torch.tensor([[0.3, 0.1], [-0.2, 0.4]]), torch.zeros(2, 2),
                   torch.tensor([[3.0, 5.0], [4.0, 2.0]]), kl=torch.tensor([0.5, 2.0]))
    for name, config in (("dpo", DpoConfig), ("ipo", IpoConfig), ("simpo", SimpoConfig)):
        cfg = OmegaConf.create({"name": name, **vars(config()),
                                "lpc": vars(LpcSettings(codes=8))})
        base = ALGORITHMS[name]
        wrapped = resolve(cfg)
        assert wrapped.coded and not base.coded and wrapped.build is base.build
        loss, metrics = wrapped.objective(x, cfg)
        base_loss, base_metrics = base.objective(x, cfg)
        torch.testing.assert_close(loss, base_loss + 0.05 * x.kl)
        assert metrics == {**base_metrics, "lpc_kl": pytest.approx(1.25)}
        cfg.lpc.codes = 0
        assert resolve(cfg) is base
    h_w, h_l = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4])
    assert coded(dpo_loss(h_w, h_l, 0.1), x.kl, 0.05)[0].item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-0.1 * 0.2))) + 0.025, abs=1e-6)


@pytest.fixture
def pair(tiny_policy):
    from selfplay.core.lm import load_tokenizer

    model = load_causal_lm(tiny_policy, "float32").eval()
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    responses = [[20, 21, 22, 2], [23, 24, 2]]
    ids, attn, mask = response_batch(prompts, responses, load_tokenizer(tiny_policy).pad_token_id)
    return model, ids, attn, mask


def test_with_one_zero_code_lpc_dpo_is_dpo(pair):
    """A single code at the origin: z = 0 whatever the networks say, KL(q || p) = 0, and LPC-DPO's loss is DPO's."""
    model, ids, attn, mask = pair
    codes = LatentCodes(model.config.hidden_size, 1)
    with torch.no_grad():
        codes.codebook.zero_()
    states = final_states(model, ids, attn)
    prompt_end, last = last_positions(mask, attn)
    rows = torch.arange(len(ids))
    h_x, h_xy = states[rows, prompt_end], states[rows, last]
    prior, posterior = codes.prior_logits(h_x), codes.posterior_logits(h_xy, h_xy.flip(0))
    z = codes.embed(mixture(prior, posterior, 0.3, 1.0, torch.Generator().manual_seed(0)))
    conditioned = conditioned_logprobs(model, states, ids, mask, z)
    plain = sequence_logprobs(model, ids, attn, mask)
    assert torch.allclose(conditioned, plain, rtol=0, atol=1e-6)
    ref = plain.detach() - 0.5
    kl = categorical_kl(posterior, prior)
    assert torch.equal(kl, torch.zeros(2))
    lpc = coded(dpo_loss(conditioned[:1] - ref[:1], conditioned[1:] - ref[1:], 0.1), kl[:1], 0.05)
    assert torch.allclose(lpc, dpo_loss(plain[:1] - ref[:1], plain[1:] - ref[1:], 0.1), rtol=0, atol=1e-6)


def test_the_codebook_starts_gaussian_at_init_std_or_at_zero():
    torch.manual_seed(0)
    assert LatentCodes(128, 64, init_std=0.5).codebook.std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(LatentCodes(128, 64, init_std=0.0).codebook, torch.zeros(64, 128))


def test_z_moves_only_the_response_tokens_log_probs(pair):
    """log pi(y|x, z) sums log softmax(LMHead(h + z)) over response tokens alone: by hand from the head."""
    model, ids, attn, mask = pair
    states = final_states(model, ids, attn)
    z = torch.randn(2, model.config.hidden_size)
    got = conditioned_logprobs(model, states, ids, mask, z)
    logps = torch.log_softmax(model.lm_head(states + z[:, None]), dim=-1)
    expected = [sum(logps[i, t - 1, ids[i, t]] for t in range(ids.shape[1]) if mask[i, t]) for i in range(2)]
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)
    assert not torch.allclose(got, sequence_logprobs(model, ids, attn, mask), atol=1e-3)
    assert last_positions(mask, attn)[0].tolist() == [2, 3] and last_positions(mask, attn)[1].tolist() == [6, 6]


def test_gradients_reach_the_codebook_and_both_networks(pair):
    model, ids, attn, mask = pair
    codes = LatentCodes(model.config.hidden_size, 4)
    states = final_states(model, ids, attn)
    prompt_end, last = last_positions(mask, attn)
    rows = torch.arange(2)
    prior = codes.prior_logits(states[rows, prompt_end])
    posterior = codes.posterior_logits(states[rows, last], states[rows, last].flip(0))
    z = codes.embed(mixture(prior, posterior, 0.5, 1.0, torch.Generator().manual_seed(1)))
    logps = conditioned_logprobs(model, states, ids, mask, z)
    coded(dpo_loss(logps[:1], logps[1:], 0.1), categorical_kl(posterior, prior)[:1], 0.05).sum().backward()
    for name, p in codes.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_heads_round_trip_and_a_bad_checkpoint_is_named(tmp_path):
    codes = LatentCodes(16, 5, mlp_hidden=8)
    save(codes, tmp_path)
    again = load(tmp_path)
    assert (again.hidden, again.codes, again.width) == (16, 5, 8)
    for (name, a), (_, b) in zip(codes.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    (tmp_path / "lpc.json").write_text('{"hidden": 16, "codes": 6, "mlp_hidden": 8}')
    with pytest.raises(ValueError, match="lpc.safetensors does not match .*lpc.json"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no LPC heads \\(lpc.safetensors, lpc.json missing\\)"):
        load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="at least one code"):
        LatentCodes(16, 0)


@pytest.mark.slow  # starts a vLLM engine in-process
def test_vllm_serves_z_as_the_logit_shift_w_z_both_ways(world):
    """The serving identity, on a fixed prompt and code weights c (z = sum_k c_k e_k): vLLM's next-token
    log-probs (after its logits processors) equal the transformers forward with z added to the final state,
    within 1e-4, both with a dense ``logit_bias = W z`` and with our ``CodeBias`` processor (c @ W E)."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from selfplay.core.lm import encode_prompt, load_tokenizer
    from selfplay.policy.engines import CODE_TABLE, CODE_WEIGHTS, code_bias_processor
    from selfplay.policy.lpc import code_table, logit_bias

    model = load_causal_lm(world.policy, "float32").eval()
    prompt = encode_prompt(load_tokenizer(world.tokenizer), [{"role": "user", "content": "Tell me about apples."}])
    codes = LatentCodes(model.config.hidden_size, 3)
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([0.2, 0.5, 0.3])
    with torch.no_grad():
        codes.codebook.copy_(3 * torch.randn(3, model.config.hidden_size, generator=g))
        z = codes.embed(c)
        bias = logit_bias(model, z)
        ids = torch.tensor([prompt])
        states = final_states(model, ids, torch.ones_like(ids))
        expected = torch.log_softmax(model.lm_head(states[0, -1] + z), dim=-1)
        plain = torch.log_softmax(model.lm_head(states[0, -1]), dim=-1)
        CODE_TABLE["table"] = code_table(codes, model)
    assert 1.0 < bias.abs().max().item() < 100.0  # a shift that matters, inside vLLM's clamp
    engine = dict(model=world.policy, tokenizer=world.tokenizer, dtype="float32", enforce_eager=True, seed=0,
                  max_model_len=256, logprobs_mode="processed_logprobs", max_logprobs=-1)
    ways = {"logit_bias": ({}, {"logit_bias": {i: float(b) for i, b in enumerate(bias.tolist())}}),
            "CodeBias": ({"logits_processors": [code_bias_processor()]}, {"extra_args": {CODE_WEIGHTS: c.tolist()}})}
    for way, (options, request) in ways.items():
        llm = LLM(**engine, **options)
        params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=-1, **request)
        out = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0].outputs[0].logprobs[0]
        got = torch.tensor([out[i].logprob for i in range(len(expected))])
        assert torch.allclose(got, expected, atol=1e-4), (way, (got - expected).abs().max())
        assert (got - plain).abs().max() > 0.5, way  # the shift did move them
        del llm


def test_a_head_with_a_bias_or_a_shift_beyond_vllms_clamp_is_refused():
    from selfplay.policy.lpc import logit_bias

    class Model(torch.nn.Module):
        def __init__(self, bias: bool):
            super().__init__()
            self.head = torch.nn.Linear(4, 6, bias=bias)

        def get_output_embeddings(self):
            return self.head

    with pytest.raises(ValueError, match="only for an LM head without a bias; this model's head has one"):
        logit_bias(Model(True), torch.ones(4))
    with pytest.raises(ValueError, match="beyond vLLM's logit-bias range of \\+-100"):
        logit_bias(Model(False), torch.full((4,), 1e4))


def lpc_learner(policy: str, model: str | None = None, algo: str = "dpo", **lpc_settings):
    from omegaconf import OmegaConf

    from selfplay.config.loading import load_config
    from selfplay.config.schema import TrainConfig
    from selfplay.policy.specs import LearnerSpec
    from selfplay.policy.trainer import PolicyTrainer

    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {"lr": 1e-2, "epochs": 1, "batch_size": 4,
                                                             "micro_batch_size": 2})
    overrides = [f"algo={algo}", "generator.backend=hf", *(f"algo.lpc.{k}={v}" for k, v in lpc_settings.items())]
    return PolicyTrainer(LearnerSpec(model or policy, policy, "float32", cfg, load_config(overrides).algo, seed=0,
                                     initial=policy))


def test_the_heads_take_their_own_learning_rate(tiny_policy):
    """train.lr = 1e-2 for the policy, algo.lpc.lr = 0.5 for codebook, prior and posterior; unset: train.lr."""
    from tests.policy.test_trainer import pair_batch

    learner = lpc_learner(tiny_policy, codes=4, lr=0.5)
    learner.begin_iteration(pair_batch("initial"))
    policy, heads = learner.torch_optimizer.param_groups
    assert (policy["lr"], heads["lr"]) == (1e-2, 0.5)
    assert {id(p) for p in heads["params"]} == {id(p) for p in learner.codes.parameters()}
    before = learner.codes.codebook.detach().clone()
    learner.train_epoch(0, iteration=1)
    # Adam's first step moves each entry by about lr (the bias-corrected ratio is +-1): 0.5, not 1e-2
    step = (learner.codes.codebook.detach() - before).abs()
    assert step.max().item() == pytest.approx(0.5, rel=0.01)
    default = lpc_learner(tiny_policy, codes=4)
    default.begin_iteration(pair_batch("initial"))
    assert [g["lr"] for g in default.torch_optimizer.param_groups] == [1e-2, 1e-2]


def test_a_learner_with_one_zero_code_takes_dpos_step(tiny_policy):
    """One optimizer step over the whole batch: z = 0 (the one code starts at the origin), KL = 0, so the
    policy's gradient, its loss and its new weights are DPO's."""
    from tests.policy.test_trainer import pair_batch

    plain, coded = lpc_learner(tiny_policy), lpc_learner(tiny_policy, codes=1)
    with torch.no_grad():
        coded.codes.codebook.zero_()
    stats = []
    for learner in (plain, coded):
        learner.begin_iteration(pair_batch("initial"))
        stats.append(learner.train_epoch(0, iteration=1))
    assert stats[1]["step_losses"] == pytest.approx(stats[0]["step_losses"], rel=0, abs=1e-6)
    assert stats[1]["lpc_kl"] == 0.0
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), coded.model.state_dict().items()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


@pytest.mark.parametrize("algo", ["dpo", "ipo", "simpo"])
def test_lpc_trains_its_heads_and_they_come_back_from_the_checkpoint(tiny_policy, tmp_path, algo):
    from tests.policy.test_trainer import pair_batch

    learner = lpc_learner(tiny_policy, algo=algo, codes=4)
    before = {k: v.clone() for k, v in learner.codes.state_dict().items()}
    learner.begin_iteration(pair_batch(None if algo == "simpo" else "initial"))
    stats = learner.train_epoch(0, iteration=1)
    assert all(math.isfinite(x) for x in stats["step_losses"]) and stats["lpc_kl"] >= 0
    assert all(not torch.equal(before[k], v) for k, v in learner.codes.state_dict().items())  # every head trained
    learner.save(tmp_path / "iter_1")
    assert (tmp_path / "iter_1" / "lpc.safetensors").exists() and (tmp_path / "iter_1" / "config.json").exists()
    resumed = lpc_learner(tiny_policy, model=str(tmp_path / "iter_1"), algo=algo, codes=4)
    for k, v in learner.codes.state_dict().items():
        assert torch.equal(resumed.codes.state_dict()[k], v), k


@pytest.mark.parametrize(("overrides", "message"), [
    (["algo=dpo", "algo.lpc.codes=8", "generator.backend=hf", "train.world_size=2"], "set train.world_size=1"),
    (["algo=gpo", "algo.lpc.codes=8"], "algo.lpc applies to the pair losses dpo/ipo/simpo, not to gpo"),
    (["algo=sppo", "algo.lpc.codes=8"], "not to sppo"),
    (["algo=dpa", "algo.lpc.codes=8", "scorer.kind=multi_objective"], "not to dpa"),
    (["algo=dpo", "algo.lpc.codes=-1"], "algo.lpc.codes is the codebook's size \\(0: off\\), got -1"),
    (["algo=dpo", "algo.lpc.codes=8", "algo.lpc.lam=-0.1"], "algo.lpc.lam weighs KL\\(q \\|\\| p\\) and must be >= 0"),
    (["algo=dpo", "algo.lpc.codes=8", "algo.lpc.g_over=epoch"], "algo.lpc.g_over must be one of"),
    (["algo=dpo", "algo.lpc.codes=8", "algo.lpc.gumbel_tau=0"], "algo.lpc.gumbel_tau must be > 0"),
    (["algo=dpo", "algo.lpc.codes=8", "algo.lpc.init_std=-1"], "algo.lpc.init_std is the codebook's initial"),
    (["algo=dpo", "algo.lpc.codes=8", "algo.lpc.lr=0"], "algo.lpc.lr must be > 0"),
])
def test_bad_lpc_settings_are_refused_before_any_work(overrides, message):
    from selfplay.config.loading import load_config
    from selfplay.config.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_selfplay_generate_serves_a_checkpoints_lpc_heads(tiny_policy, tmp_path, capsys):
    """A checkpoint with LPC heads: ``selfplay.generate`` draws each prompt's z from its prior and generates under
    it (greedy output differs from the same policy without the heads); vLLM is refused with one line."""
    import shutil

    from selfplay.generate import main as generate_main

    learner = lpc_learner(tiny_policy, codes=4)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        learner.codes.codebook.copy_(torch.randn(4, learner.codes.hidden, generator=g) * 3)
    learner.save(tmp_path / "with")
    shutil.copytree(tmp_path / "with", tmp_path / "without", ignore=shutil.ignore_patterns("lpc.*"))
    args = ["Tell me about apples.", "--temperature", "0", "--max-new-tokens", "8"]
    outputs = []
    for name in ("with", "without"):
        assert generate_main(["--model", str(tmp_path / name), *args]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] != outputs[1]
    assert generate_main(["--model", str(tmp_path / "with"), "--backend", "vllm", *args]) == 2
    assert "has LPC heads, whose z is served by --backend hf so far" in capsys.readouterr().err
