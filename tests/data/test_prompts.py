"""Prompt loading, validation, splitting and the per-iteration schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest

from selfplay.core.jsonl import DataError
from selfplay.data.prompts import add_system_prompt, iteration_prompts, load_prompts, split_prompts

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Name a colour."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make hub lookups fail at once; the libraries read HF_HUB_OFFLINE at import time, so patch them too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_jsonl_strings_and_message_lists(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "What is 2+2?"}) + "\n\n   \n" + json.dumps({"prompt": CHAT, "id": 7}) + "\n")
    assert load_prompts(str(path)) == [user("What is 2+2?"), CHAT]


def test_custom_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "Why?", "prompt": ""}])
    assert load_prompts(str(path), column="question") == [user("Why?")]


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": CHAT}]))
    assert load_prompts(str(path)) == [user("a"), CHAT]


def test_json_row_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "a"}, "b"]))
    with pytest.raises(DataError, match=r"row 1: expected a JSON object"):
        load_prompts(str(path))


def test_parquet_strings_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_list([{"prompt": CHAT[1:2]}, {"prompt": CHAT}]).to_parquet(str(path))
    assert load_prompts(str(path)) == [CHAT[1:2], CHAT]

    strings = tmp_path / "s.parquet"
    datasets.Dataset.from_list([{"text": "one"}, {"text": "two"}]).to_parquet(str(strings))
    assert load_prompts(str(strings), column="text") == [user("one"), user("two")]


def test_parquet_bad_row_names_index(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_list([{"prompt": "fine"}, {"prompt": "ok"}, {"prompt": None}]).to_parquet(str(path))
    with pytest.raises(DataError, match=r"p\.parquet: row 2: column 'prompt' is null"):
        load_prompts(str(path))


def test_directory_source(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    write_jsonl(data_dir / "test.jsonl", [{"prompt": "held out"}])
    assert load_prompts(str(data_dir)) == [user("a"), user("b"), user("c")]
    assert load_prompts(str(data_dir), split="test") == [user("held out")]


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        (['{"prompt": "ok"}', "{not json"], r"row 1 \(line 2\): invalid JSON"),
        (['{"prompt": "ok"}', "", '["a list"]'], r"row 1 \(line 3\): expected a JSON object, got list"),
        (
            ['{"prompt": "ok"}', '{"text": "x", "id": 1}'],
            r"row 1 \(line 2\): no column 'prompt'; columns are \['id', 'text'\]",
        ),
        (['{"prompt": null}'], r"row 0 \(line 1\): column 'prompt' is null"),
        (
            ['{"prompt": "a"}', '{"prompt": "b"}', '{"prompt": "  \\n"}'],
            r"row 2 \(line 3\): column 'prompt' is an empty string",
        ),
        (['{"prompt": 42}'], r"row 0 \(line 1\): column 'prompt' must be a string or a list of chat messages, got int"),
        (['{"prompt": []}'], r"row 0 \(line 1\): column 'prompt' is an empty message list"),
        (['{"prompt": ["hi"]}'], r"row 0 \(line 1\): message 0: expected a dict"),
        (
            ['{"prompt": "a"}', '{"prompt": [{"role": "robot", "content": "x"}]}'],
            r"row 1 \(line 2\): message 0: role must be one of system, user, assistant, got 'robot'",
        ),
        (
            ['{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": ""}]}'],
            r"row 0 \(line 1\): message 1: content must be a non-empty string",
        ),
        (
            ['{"prompt": [{"role": "user"}]}'],
            r"row 0 \(line 1\): message 0: content must be a non-empty string, got None",
        ),
        (
            ['{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'],
            r"row 0 \(line 1\): the last message must have role 'user', got 'assistant'",
        ),
    ],
)
def test_malformed_jsonl_rows(tmp_path: Path, lines: list[str], pattern: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: " + pattern):
        load_prompts(str(path))


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.json", "[]")])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=r"has no prompt rows"):
        load_prompts(str(path))


def test_json_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"prompt": "a"}')
    with pytest.raises(DataError, match=r"expected a JSON list of objects, got dict"):
        load_prompts(str(path))


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt\na\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        load_prompts(str(path))


@pytest.mark.parametrize("source", ["missing/prompts.jsonl", "no-such-dataset-selfplay-test"])
def test_missing_source_is_not_a_hub_dataset(
    offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    not_found = r"neither an existing local file/directory nor loadable from the Hugging Face hub"
    with pytest.raises(DataError, match=not_found):
        load_prompts(source)
    assert time.monotonic() - start < 10


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [user(f"p{i}") for i in range(n)]


def test_split_is_deterministic_and_disjoint() -> None:
    items = prompts(20)
    train, held_out = split_prompts(items, eval_size=5, seed=3)
    assert len(train) == 15 and len(held_out) == 5
    contents = [p[0]["content"] for p in train + held_out]
    assert sorted(contents) == sorted(p[0]["content"] for p in items)
    assert split_prompts(items, eval_size=5, seed=3) == (train, held_out)
    assert split_prompts(items, eval_size=5, seed=4) != (train, held_out)
    assert train + held_out != items  # shuffled, not the input order


def test_split_without_eval() -> None:
    train, held_out = split_prompts(prompts(4), eval_size=0, seed=0)
    assert len(train) == 4 and held_out == []


def test_split_needs_a_training_prompt() -> None:
    with pytest.raises(DataError, match=r"at least eval_size \+ 1 = 6 prompts .* got 5"):
        split_prompts(prompts(5), eval_size=5, seed=0)


def test_consecutive_iterations_are_disjoint() -> None:
    train = prompts(10)
    seen = [iteration_prompts(train, t, per_iter=3) for t in range(1, 6)]
    for a, b in zip(seen, seen[1:]):
        assert len(a) == len(b) == 3
        assert not {p[0]["content"] for p in a} & {p[0]["content"] for p in b}
    # The first three iterations cover nine distinct prompts before any repeats.
    assert len({p[0]["content"] for chunk in seen[:3] for p in chunk}) == 9


def test_iterations_wrap_around() -> None:
    train = prompts(10)
    names = lambda t: [p[0]["content"] for p in iteration_prompts(train, t, per_iter=4)]  # noqa: E731
    assert names(1) == ["p0", "p1", "p2", "p3"]
    assert names(3) == ["p8", "p9", "p0", "p1"]
    assert names(4) == ["p2", "p3", "p4", "p5"]
    assert names(6) == names(1)  # 5 * 4 = 20 prompts later, back at the start


def test_iteration_with_more_per_iter_than_prompts_uses_all() -> None:
    train = prompts(3)
    assert iteration_prompts(train, 1, per_iter=3) == train
    assert iteration_prompts(train, 2, per_iter=10) == train


def test_iteration_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        iteration_prompts(prompts(3), 0, per_iter=1)


def test_add_system_prompt() -> None:
    plain = user("q")
    original = [plain, CHAT]
    out = add_system_prompt(original, "Be kind.")
    assert out == [[{"role": "system", "content": "Be kind."}, *plain], CHAT]
    assert original == [user("q"), CHAT]  # inputs untouched
    unchanged = add_system_prompt(original, None)
    assert unchanged == original and unchanged[0] is not original[0]


def test_subsets_alternate_between_disjoint_halves():
    train = prompts(10)
    names = lambda t, per: [p[0]["content"] for p in iteration_prompts(train, t, per, subsets=2)]  # noqa: E731
    half1, half2 = {p[0]["content"] for p in train[:5]}, {p[0]["content"] for p in train[5:]}
    assert set(names(1, 10)) == half1 and set(names(2, 10)) == half2
    assert set(names(3, 10)) == half1 and set(names(4, 10)) == half2
    # drawing 3 of a half at a time: consecutive visits of a half take its next chunk
    assert set(names(1, 3)) <= half1 and set(names(2, 3)) <= half2 and set(names(3, 3)) <= half1
    assert names(1, 3) != names(3, 3)
    for t in range(1, 6):  # consecutive iterations never share a prompt
        assert not set(names(t, 3)) & set(names(t + 1, 3))
    with pytest.raises(DataError, match="data.subsets=11"):
        iteration_prompts(train, 1, 3, subsets=11)
