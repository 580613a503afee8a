"""The multi-objective reward model (docs/methods.md §2.3, [DPA] sec. 2.1): the masked regression loss, attribute
rows, the Hugging Face sequence-classification layout both ways, and ``train_pm kind=multi_objective``.

Everything here runs on a tiny random Llama and a tokenizer trained on the test's own words, not the
embedded world.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from selfplay import eval_pm, train_pm
from selfplay.core.jsonl import DataError
from selfplay.core.lm import ModelLoadError, encode_exchange, load_tokenizer, pad_sequences
from selfplay.data.attributes import (
    AttributeRow,
    attribute_ranges,
    load_attribute_rows,
    parse_attribute_row,
    rescale,
    write_attribute_jsonl,
)
from selfplay.data.pairs import BadRow
from selfplay.models.kinds import load_preference_model, new_preference_model
from selfplay.models.preference_losses import masked_mse_loss
from selfplay.models.multi_objective import MultiObjectiveRewardModel
from selfplay.models.preference_scorer import load_scorer
from selfplay.models.training import init_head, label_tensor, pearson, predict, regression_report, train_attribute_model
from selfplay.world.tokenizer import train_tokenizer

TOPICS = {"apples": ["red", "sweet", "orchard", "crisp"], "rivers": ["water", "flow", "bank", "delta"]}
FILLER = ["stuff", "maybe", "okay", "thing"]
NAMES = ["helpfulness", "verbosity"]
PROMPTS = [[{"role": "user", "content": "Tell me about apples."}], [{"role": "user", "content": "Describe rivers."}]]
RESPONSES = [["red sweet orchard", "stuff maybe", "crisp red thing okay", "okay"], ["water flow bank", "maybe", "delta"]]


def sample_row(rng: random.Random) -> dict:
    """A HelpSteer-style row: helpfulness 0-4 (topic words), verbosity = word count; sometimes one label missing."""
    topic = rng.choice(list(TOPICS))
    words = [rng.choice(TOPICS[topic] if rng.random() < rng.random() else FILLER) for _ in range(rng.randint(1, 8))]
    row = {"prompt": f"Tell me about {topic}.", "response": " ".join(words),
           "helpfulness": min(4, sum(w in TOPICS[topic] for w in words)), "verbosity": len(words)}
    if rng.random() < 0.15:
        row[rng.choice(NAMES)] = None
    return row


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    words = [w for ws in TOPICS.values() for w in ws] + FILLER + list(TOPICS)
    texts = [" ".join(words), *(f"Tell me about {t}." for t in TOPICS), "Describe rivers."] * 4
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, vocab_size=320).save_pretrained(path)
    return load_tokenizer(str(path))


def tiny_config(tok) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


def tiny_model(tok, names=NAMES, seed: int = 0) -> MultiObjectiveRewardModel:
    torch.manual_seed(seed)
    model = new_preference_model("multi_objective", AutoModel.from_config(tiny_config(tok)), attributes=names)
    model.score.weight.data.normal_(0, 3.0)  # outputs spread over tens of points, like a trained head's
    return model.eval()


@pytest.fixture(scope="module")
def backbone_dir(tok, tmp_path_factory) -> str:
    """A tiny random causal LM with the tokenizer: what train_pm's ``model=`` points at."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "policy"
    LlamaForCausalLM(tiny_config(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def padded_batch(tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (prompt, response) above as one right-padded batch of different lengths."""
    seqs = [encode_exchange(tok, p, r)[0] for p, group in zip(PROMPTS, RESPONSES) for r in group]
    assert len({len(s) for s in seqs}) > 1
    return pad_sequences(seqs, tok.pad_token_id)


# ---------------------------------------------------------------- the loss


def test_masked_mse_by_hand():
    """pred [[1, 2], [3, 4]], labels [[0, NaN], [5, 1]], (0, 1) masked:
    ((1-0)^2 + (3-5)^2 + (4-1)^2) / 3 = (1 + 4 + 9) / 3 = 14/3; reading the missing label as 0 would give
    (1 + 4 + 4 + 9) / 4 = 4.5.  d/dpred = 2 (pred - label) / 3 on observed entries, exactly 0 at the masked one."""
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    labels = torch.tensor([[0.0, math.nan], [5.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    loss = masked_mse_loss(pred, labels, mask)
    torch.testing.assert_close(loss, torch.tensor(14 / 3))
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([[2 / 3, 0.0], [-4 / 3, 2.0]]))
    assert not pred.grad.isnan().any()


def test_masked_mse_needs_an_observed_label():
    with pytest.raises(ValueError, match="no observed label"):
        masked_mse_loss(torch.zeros(2, 2), torch.full((2, 2), math.nan), torch.zeros(2, 2, dtype=torch.bool))


def test_pearson_by_hand():
    """x = [1, 2, 3], y = [2, 4, 7]: deviations [-1, 0, 1] and [-7/3, -1/3, 8/3]: sum of products 5, of squares
    2 and 114/9, so r = 5 / sqrt(2 * 114/9) = 0.99340; a constant side gives 0."""
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])) == pytest.approx(5 / math.sqrt(228 / 9))
    assert pearson(torch.tensor([5.0, 5.0, 5.0]), torch.tensor([1.0, 2.0, 3.0])) == 0.0


# ---------------------------------------------------------------- attribute rows


def test_loader_infers_attributes_and_masks_missing_labels(tmp_path):
    rows = [
        {"prompt": "Tell me about apples.", "note": "first", "helpfulness": 3, "response": "red sweet",
         "flag": True, "verbosity": None},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe rivers."}],
         "response": "water", "helpfulness": float("nan"), "verbosity": 1.5},
        {"prompt": "Tell me about apples.", "response": [{"role": "assistant", "content": "crisp"}], "helpfulness": 0},
    ]
    got, names, bad = load_attribute_rows(write_jsonl(tmp_path / "a.jsonl", rows))
    assert names == ["helpfulness", "verbosity"]  # numeric or null, in column order; not the string or the bool
    assert bad == []
    assert [r.labels for r in got] == [(3.0, None), (None, 1.5), (0.0, None)]
    assert got[1].prompt[0] == {"role": "system", "content": "Be brief."} and got[2].response == "crisp"
    only, named, bad = load_attribute_rows(str(tmp_path / "a.jsonl"), attributes=["verbosity"], max_bad_share=0.7)
    assert (named, [r.labels for r in only], [b.index for b in bad]) == (["verbosity"], [(1.5,)], [0, 2])


def test_loader_names_bad_rows_and_refuses_too_many(tmp_path):
    good = [{"prompt": f"q{i}", "response": "a", "helpfulness": i, "verbosity": 1} for i in range(6)]
    bad = [
        {"prompt": "q", "response": "a", "helpfulness": "high", "verbosity": 1},
        {"prompt": "q", "helpfulness": 1, "verbosity": 1},
        {"prompt": "q", "response": "a", "helpfulness": None, "verbosity": None},
        {"prompt": "q", "response": "a", "helpfulness": float("inf"), "verbosity": 1},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", good + bad)
    rows, names, got = load_attribute_rows(path, max_bad_share=0.5)
    assert (len(rows), names) == (6, NAMES)
    assert got == [
        BadRow(6, "column 'helpfulness' must be a number or null, got 'high'"),
        BadRow(7, "no column 'response'; columns are ['helpfulness', 'prompt', 'verbosity']"),
        BadRow(8, "every attribute label is missing (helpfulness, verbosity)"),
        BadRow(9, "column 'helpfulness' is infinite"),
    ]
    with pytest.raises(DataError, match=r"4 of 10 rows are malformed .* data.max_bad_share.* row 6: column 'helpful"):
        load_attribute_rows(path, max_bad_share=0.3)
    with pytest.raises(DataError, match="found no attribute columns"):
        load_attribute_rows(write_jsonl(tmp_path / "none.jsonl", [{"prompt": "q", "response": "a", "x": "y"}]))


def test_rescale_to_0_100():
    """HelpSteer's 0-4 becomes x25; verbosity observed on [1, 3]: 2 -> 50; a missing label stays missing."""
    rows = [AttributeRow([{"role": "user", "content": "q"}], "a", labels) for labels in [(3.0, 1.0), (0.0, None),
                                                                                          (4.0, 2.0), (None, 3.0)]]
    assert attribute_ranges(rows, NAMES) == {"helpfulness": (0.0, 4.0), "verbosity": (1.0, 3.0)}
    scaled = rescale(rows, attribute_ranges(rows, NAMES))
    assert [r.labels for r in scaled] == [(75.0, 0.0), (0.0, None), (100.0, 50.0), (None, 100.0)]
    with pytest.raises(DataError, match="attribute 'verbosity' has range \\(2.0, 2.0\\)"):
        rescale(rows, {"helpfulness": (0.0, 4.0), "verbosity": (2.0, 2.0)})


def test_write_attribute_jsonl_round_trip(tmp_path):
    rows = [AttributeRow([{"role": "user", "content": "q"}], "a", (75.0, None)),
            AttributeRow([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "b", (None, 10.0))]
    write_attribute_jsonl(tmp_path / "rows.jsonl", rows, NAMES)
    first = json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[0])
    assert first == {"prompt": "q", "response": "a", "helpfulness": 75.0, "verbosity": None}
    assert load_attribute_rows(str(tmp_path / "rows.jsonl")) == (rows, NAMES, [])


# ---------------------------------------------------------------- the model and its checkpoint


def test_attribute_rewards_per_prompt(tok):
    model = tiny_model(tok)
    got = model.attribute_rewards(tok, PROMPTS, RESPONSES, batch_size=2)
    assert [r.shape for r in got] == [(4, 2), (3, 2)] and all(r.device.type == "cpu" for r in got)
    ids, mask = padded_batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(got), model(ids, mask), rtol=1e-5, atol=1e-4)
    assert torch.cat(got).std(0).min() > 1.0  # the random head tells the responses apart
    with pytest.raises(ValueError, match=r"only along a direction v .*S = v\^T \(r_i - r_j\) / tau"):
        model.score_matrices(tok, PROMPTS, RESPONSES, 4)
    with pytest.raises(ValueError, match="only along a direction v"):
        model.pair_loss(tok, [])
    with pytest.raises(ValueError, match="needs its attribute names"):
        new_preference_model("multi_objective", AutoModel.from_config(tiny_config(tok)))


def test_saved_model_loads_as_auto_model_for_sequence_classification(tok, tmp_path):
    """Ours -> HF: num_labels m, regression, the names in id2label, logits = our rewards on a right-padded batch."""
    names = ["helpfulness", "correctness", "verbosity"]
    model = tiny_model(tok, names, seed=1)
    model.save_pretrained(tmp_path / "mo")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "mo")).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    assert (hf.config.num_labels, hf.config.problem_type) == (3, "regression")
    assert hf.config.id2label == dict(enumerate(names)) and hf.config.label2id == {n: i for i, n in enumerate(names)}
    ids, mask = padded_batch(tok)
    with torch.no_grad():
        ours, theirs = model(ids, mask), hf(input_ids=ids, attention_mask=mask).logits
    assert theirs.shape == (7, 3)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-4)
    loaded = load_preference_model("multi_objective", str(tmp_path / "mo"))
    assert loaded.attributes == names
    with pytest.raises(ModelLoadError, match=f"scorer model '{tmp_path / 'mo'}' is a 'multi_objective' checkpoint"):
        load_preference_model("bt", str(tmp_path / "mo"))


def test_published_sequence_classification_model_loads(tok, tmp_path):
    """A plain HF LlamaForSequenceClassification (no meta file): names from id2label, same outputs, via the scorer."""
    cfg = tiny_config(tok)
    cfg.num_labels, cfg.problem_type = 2, "regression"
    cfg.id2label, cfg.label2id = {0: "harmlessness", 1: "honesty"}, {"harmlessness": 0, "honesty": 1}
    torch.manual_seed(2)
    hf = AutoModelForSequenceClassification.from_config(cfg).eval()
    hf.score.weight.data.normal_(0, 3.0)
    hf.save_pretrained(tmp_path / "pub")
    tok.save_pretrained(tmp_path / "pub")

    scorer = load_scorer("multi_objective", str(tmp_path / "pub"), batch_size=3)
    assert scorer.kind == "multi_objective" and scorer.attributes == ["harmlessness", "honesty"]
    got = scorer.rewards(PROMPTS, RESPONSES)
    ids, mask = padded_batch(tok)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(torch.cat(got), expected, rtol=1e-5, atol=1e-4)
    assert [r.shape for r in got] == [(4, 2), (3, 2)]


def test_other_checkpoints_refused(tok, tmp_path):
    backbone = AutoModel.from_config(tiny_config(tok))
    new_preference_model("bt", backbone).save_pretrained(tmp_path / "bt")
    new_preference_model("gpm", backbone).save_pretrained(tmp_path / "gpm")
    tok.save_pretrained(tmp_path / "bt")
    with pytest.raises(ModelLoadError, match=f"'{tmp_path / 'bt'}' is a 'bt' checkpoint, not 'multi_objective'"):
        load_preference_model("multi_objective", str(tmp_path / "bt"))
    with pytest.raises(ModelLoadError, match=f"'{tmp_path / 'gpm'}' is a 'gpm' checkpoint"):
        load_preference_model("multi_objective", str(tmp_path / "gpm"))
    (tmp_path / "gpm" / "preference_model.json").unlink()
    with pytest.raises(ModelLoadError, match=f"'{tmp_path / 'gpm'}' has no score.weight"):
        load_preference_model("multi_objective", str(tmp_path / "gpm"))
    with pytest.raises(ValueError, match="the scorer is a 'bt' model"):
        load_scorer("bt", str(tmp_path / "bt"), batch_size=2).rewards(PROMPTS, RESPONSES)
    assert load_scorer("bt", str(tmp_path / "bt"), batch_size=2).attributes is None


# ---------------------------------------------------------------- train_pm kind=multi_objective


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    rng = random.Random(0)
    return write_jsonl(tmp_path_factory.mktemp("rows") / "train.jsonl", [sample_row(rng) for _ in range(80)])


def test_train_pm_multi_objective(backbone_dir, rows_file, tok, tmp_path, capsys):
    out = tmp_path / "mo"
    code = train_pm.main(["kind=multi_objective", f"model={backbone_dir}", f"data.path={rows_file}",
                          "data.eval_share=0.25", "train.steps=40", "train.batch_size=16", "train.device=cpu",
                          f"out={out}"])
    assert code == 0
    assert {"model.safetensors", "config.json", "tokenizer.json", "train_config.yaml", "eval_report.json"} <= {
        p.name for p in out.iterdir()}
    report = json.loads((out / "eval_report.json").read_text())
    assert (report["kind"], report["attributes"], report["n_train"], report["n_eval"]) == (
        "multi_objective", NAMES, 60, 20)
    assert report["bad_rows"]["train"]["count"] == 0
    rows, _, _ = load_attribute_rows(rows_file)
    observed = attribute_ranges(rows, NAMES)
    assert report["ranges"]["helpfulness"][1] <= observed["helpfulness"][1]  # the training rows' range
    # Over backbone, row and train seeds 0-5 on this machine kind: loss ratio 0.04-0.34, correlations 0.87-1.00.
    assert report["loss_last"] < 0.5 * report["loss_first"]
    for split, n in (("train", 60), ("held_out", 20)):
        table = report[split]["attributes"]
        assert report[split]["rows"] == n and set(table) == set(NAMES)
        assert all(0 < table[a]["n"] <= n and table[a]["mse"] >= 0 and -1 <= table[a]["correlation"] <= 1
                   for a in NAMES)
    assert all(report[split]["attributes"][a]["correlation"] > 0.5 for split in ("train", "held_out") for a in NAMES)
    printed = capsys.readouterr().out
    assert "held-out regression (20 rows" in printed and "verbosity" in printed and "correlation" in printed

    # the checkpoint, as our scorer and as Hugging Face's model, gives rewards on the labels' 0-100 scale
    scorer = load_scorer("multi_objective", str(out), batch_size=8)
    assert scorer.attributes == NAMES
    ours = torch.cat(scorer.rewards(PROMPTS, RESPONSES))
    assert 10 < ours.mean() < 90
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    ids, mask = padded_batch(load_tokenizer(str(out)))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits, ours, rtol=1e-5, atol=1e-3)
    assert hf.config.id2label == {0: "helpfulness", 1: "verbosity"}

    assert eval_pm.main(["scorer.kind=multi_objective", f"scorer.model={out}"]) == 2
    assert "eval_report.json" in capsys.readouterr().err


def test_train_pm_multi_objective_eval_path_and_given_ranges(backbone_dir, rows_file, tmp_path):
    """Named attributes (their order is the head's), a separate held-out file read with them, and
    data.attribute_ranges used as given for the attribute it names, the observed range for the other."""
    rng = random.Random(1)
    held_out = write_jsonl(tmp_path / "test.jsonl", [sample_row(rng) for _ in range(10)])
    out = tmp_path / "mo"
    code = train_pm.main(["kind=multi_objective", f"model={backbone_dir}", f"data.path={rows_file}",
                          f"data.eval_path={held_out}", "data.attributes=[verbosity,helpfulness]",
                          "data.attribute_ranges={verbosity: [0, 10]}", "train.steps=2", "train.batch_size=8",
                          "train.device=cpu", f"out={out}"])
    assert code == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert (report["attributes"], report["n_train"]) == (["verbosity", "helpfulness"], 80)
    assert report["ranges"] == {"verbosity": [0, 10], "helpfulness": [0, 4]}
    assert report["held_out"]["rows"] == 10 and report["bad_rows"]["eval"]["count"] == 0


def test_world_default_data_for_multi_objective(monkeypatch, tmp_path):
    """With no data.path, kind=multi_objective reads the world's attribute rows (World.attribute_data),
    whose labels are on 0-100 already: their ranges default to [0, 100], so rescaling leaves them alone."""
    from selfplay.world import build

    class FakeWorld:
        policy = str(tmp_path / "policy")

        def attribute_data(self, cfg) -> str:
            return str(tmp_path / "attributes")

    monkeypatch.setattr(build, "get_world", lambda cfg: FakeWorld())
    from selfplay.config.loading import load_config
    from selfplay.config.pm import PM_PRESET_DIR, TrainPMConfig, check_train

    cfg = load_config(["multi_objective"], schema_class=TrainPMConfig, preset_dir=PM_PRESET_DIR, check=check_train)
    cfg = train_pm.resolve_sources(cfg)
    assert (cfg.data.path, cfg.data.eval_path) == (str(tmp_path / "attributes" / "train.jsonl"),
                                                   str(tmp_path / "attributes" / "test.jsonl"))
    assert cfg.data.attribute_ranges == {"helpfulness": [0, 100], "verbosity": [0, 100]}  # already on 0-100
    assert cfg.model == str(tmp_path / "policy")


@pytest.mark.parametrize(("args", "expected"), [
    (["kind=gpm", "data.attributes=[helpfulness]"], "data.attributes applies to kind=multi_objective only"),
    (["kind=bt", "data.response_column=answer"], "data.response_column applies to kind=multi_objective only"),
    (["kind=gpm", "data.attribute_ranges={a: [0, 4]}"], "data.attribute_ranges applies to kind=multi_objective"),
    (["kind=multi_objective", "k=4"], "k applies to kind=gpm only"),
    (["kind=multi_objective", "data.subset_column=cat"], "data.subset_column applies to kind=gpm | bt | pairwise"),
    (["kind=multi_objective", "data.attribute_ranges={a: [4, 0]}"], "data.attribute_ranges.a must be [lo, hi]"),
    (["kind=multi_objective", "data.attributes=[a,a]"], "data.attributes must name distinct"),
])
def test_config_errors(args, expected, capsys):
    assert train_pm.main(args) == 2
    assert expected in capsys.readouterr().err


def test_unknown_range_name_and_bad_data_refused(backbone_dir, rows_file, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["kind=multi_objective", f"model={backbone_dir}", "train.steps=1", "train.device=cpu", f"out={out}"]
    assert train_pm.main([*base, f"data.path={rows_file}", "data.attribute_ranges={helpfulnes: [0, 4]}"]) == 2
    assert "data.attribute_ranges names ['helpfulnes']" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "response": "a", "helpfulness": 1}] * 8
                      + [{"prompt": "q", "response": "a", "helpfulness": "x"}] * 2)
    assert train_pm.main([*base, f"data.path={bad}"]) == 2
    assert "2 of 10 rows are malformed" in capsys.readouterr().err
    assert not out.exists()


def test_regression_report_counts_observed_labels_only(tok):
    """n per attribute counts the rows that observe it; mse is over those rows only."""
    model = tiny_model(tok)
    rows = [AttributeRow(PROMPTS[0], r, labels) for r, labels in zip(RESPONSES[0], [(10.0, None), (20.0, 5.0),
                                                                                  (None, 7.0), (40.0, None)])]
    report = regression_report(model, tok, rows, batch_size=2)
    pred = torch.cat(model.attribute_rewards(tok, PROMPTS[:1], RESPONSES[:1], 4))
    assert report["rows"] == 4
    assert report["attributes"]["helpfulness"]["n"] == 3 and report["attributes"]["verbosity"]["n"] == 2
    expected = ((pred[[0, 1, 3], 0] - torch.tensor([10.0, 20.0, 40.0])) ** 2).mean().item()
    assert report["attributes"]["helpfulness"]["mse"] == pytest.approx(expected, rel=1e-5)


def test_probe_start_puts_the_bias_free_head_on_the_labels_scale(tok):
    """The head has no bias, yet after ``init_head`` its mean prediction is each attribute's mean label (0-100)
    to within a few points, where the random head was tens of points off; probe_start=False keeps a head."""
    rng = random.Random(2)
    rows = [parse_attribute_row(sample_row(rng), NAMES) for _ in range(60)]
    rows = rescale(rows, attribute_ranges(rows, NAMES))
    labels, mask = label_tensor(rows)
    model = tiny_model(tok)

    def mean_gaps() -> list[float]:
        with torch.no_grad():
            pred = predict(model, tok, rows, 64)
        return [abs(pred[mask[:, a], a].mean() - labels[mask[:, a], a].mean()).item() for a in range(len(NAMES))]

    assert min(mean_gaps()) > 20
    init_head(model, tok, rows, batch_size=16)
    assert max(mean_gaps()) < 1
    head = model.score.weight.detach().clone()
    train_attribute_model(model, tok, rows, steps=1, batch_size=8, lr=1e-12, seed=0, probe_start=False)
    torch.testing.assert_close(model.score.weight.detach(), head)
