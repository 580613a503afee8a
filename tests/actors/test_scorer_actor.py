"""The scorer actor holds any preference-model kind (PairRM too) and returns what the library's Scorer computes."""

from __future__ import annotations

import ray
import torch
from transformers import AutoModel, LlamaConfig

from actors.scorer import ScoringWorker as ScorerActor
from selfplay.core.lm import load_tokenizer
from selfplay.models import PAIR_KINDS
from selfplay.models.kinds import new_preference_model
from selfplay.models.preference_scorer import ScorerSpec, load_scorer
from tests.models.test_pairrm import hf_layout

PROMPTS = [[{"role": "user", "content": "Tell me about chess."}]]
RESPONSES = [["sure king pawn board", "hmm stuff thing", "well knight move"]]


def test_one_scorer_actor_serves_every_kind_in_turn(world, ray_cluster, tmp_path):
    """One actor process set up with each pair kind's checkpoint in turn, then a PairRM-hf checkpoint (its source
    in the world policy's chat template, SPPO's aggregation: as run.py starts it): each scores as the library's
    Scorer does in this process."""
    tok = load_tokenizer(world.tokenizer)
    actor = ScorerActor.remote()  # one process: its setup replaces the model it holds
    for kind in PAIR_KINDS:
        torch.manual_seed(0)
        backbone = AutoModel.from_config(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                     num_hidden_layers=1, num_attention_heads=1,
                                                     num_key_value_heads=1))
        new_preference_model(kind, backbone, k=2).save_pretrained(tmp_path / kind)
        tok.save_pretrained(tmp_path / kind)
        ray.get(actor.setup.remote(ScorerSpec(kind, str(tmp_path / kind), 8, None, 0.1, str(tmp_path / kind), "cpu")))
        (remote,) = ray.get(actor.score.remote(PROMPTS, RESPONSES))
        (local,) = load_scorer(kind, str(tmp_path / kind), 8).score(PROMPTS, RESPONSES)
        torch.testing.assert_close(remote, local)
        assert remote.shape == (3, 3) and torch.equal(remote, -remote.T), kind

    path, _ = hf_layout(tmp_path)
    options = {"aggregate": "sppo", "source": "template", "template": world.tokenizer}
    ray.get(actor.setup.remote(ScorerSpec("pairrm", str(path), 4, None, None, str(path), "cpu", **options)))
    (remote,) = ray.get(actor.score.remote(PROMPTS, RESPONSES))
    (local,) = load_scorer("pairrm", str(path), 4, tokenizer=str(path), **options).score(PROMPTS, RESPONSES)
    torch.testing.assert_close(remote, local)
    assert remote.shape == (3, 3) and torch.equal(remote, -remote.T) and remote.abs().max() > 1e-3
    ray.kill(actor)
