"""Loading preference pairs in TRL's formats, reporting malformed rows, splitting and writing pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfplay.core.jsonl import DataError
from selfplay.data.pairs import PreferencePair, load_pairs, split_pairs, write_pairs_jsonl

SYSTEM = {"role": "system", "content": "Be brief."}
Q1 = {"role": "user", "content": "Name a colour."}
A1 = {"role": "assistant", "content": "Red."}
Q2 = {"role": "user", "content": "Another?"}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def good_row(i: int) -> dict:
    return {"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}


def test_standard_strings_with_subsets(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Why?", "chosen": "Because.", "rejected": "No.", "subset": "chat"},
        {"prompt": "How?", "chosen": "Carefully.", "rejected": "Badly.", "subset": ""},
        {"prompt": "Who?", "chosen": "Me.", "rejected": "You.", "subset": 3},
    ])
    pairs, bad = load_pairs(path)
    assert bad == []
    assert pairs == [
        PreferencePair(user("Why?"), "Because.", "No.", "chat"),
        PreferencePair(user("How?"), "Carefully.", "Badly.", None),  # empty subset: none
        PreferencePair(user("Who?"), "Me.", "You.", None),  # not a string: none
    ]


def test_subset_column_named_or_disabled(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{**good_row(0), "category": "math", "subset": "chat"}])
    assert load_pairs(path, subset_column="category")[0][0].subset == "math"
    assert load_pairs(path, subset_column=None)[0][0].subset is None


def test_conversational_explicit_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.json"  # a JSON list of objects
    path.write_text(json.dumps([
        {"prompt": [SYSTEM, Q1], "chosen": assistant("Blue."), "rejected": assistant("Seven.")},
        # the prompt repeated inside each conversation (UltraFeedback-binarized style)
        {"prompt": "Name a colour.", "chosen": [Q1, *assistant("Blue.")], "rejected": [Q1, *assistant("Seven.")]},
        # mixed: a message-list prompt with string responses
        {"prompt": [Q1], "chosen": "Blue.", "rejected": "Seven."},
    ]))
    pairs, bad = load_pairs(str(path))
    assert bad == []
    assert pairs == [
        PreferencePair([SYSTEM, Q1], "Blue.", "Seven."),
        PreferencePair([Q1], "Blue.", "Seven."),
        PreferencePair([Q1], "Blue.", "Seven."),
    ]


def test_conversational_implicit_prompt(tmp_path: Path) -> None:
    prefix = [SYSTEM, Q1, A1, Q2]
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"chosen": [*prefix, *assistant("Green.")], "rejected": [*prefix, *assistant("Dog.")], "subset": "multi"},
        {"chosen": [Q1, *assistant("Blue.")], "rejected": [Q1, *assistant("Seven.")]},
    ])
    pairs, bad = load_pairs(path)
    assert bad == []
    assert pairs == [PreferencePair(prefix, "Green.", "Dog.", "multi"), PreferencePair([Q1], "Blue.", "Seven.")]


def test_parquet_and_directory(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame([
        # parquet stores message lists as structs: keys absent from one message come back as None
        {"prompt": [{"role": "user", "content": "Hi", "name": "x"}], "chosen": assistant("Hello."),
         "rejected": assistant("Go away."), "subset": "chat"},
        {"prompt": [SYSTEM, Q1], "chosen": assistant("Blue."), "rejected": assistant("Seven."), "subset": "safety"},
    ])
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    frame.to_parquet(data_dir / "test-00000.parquet")
    expected = [PreferencePair(user("Hi"), "Hello.", "Go away.", "chat"),
                PreferencePair([SYSTEM, Q1], "Blue.", "Seven.", "safety")]
    assert load_pairs(str(data_dir / "test-00000.parquet")) == (expected, [])
    assert load_pairs(str(data_dir), split="test") == (expected, [])


ASSISTANT_LAST = [Q1, *assistant("x")]


@pytest.mark.parametrize(("row", "reason"), [
    ({"prompt": "q", "rejected": "b"}, r"no column 'chosen'; columns are \['prompt', 'rejected'\]"),
    ({"prompt": "q", "chosen": "a"}, r"no column 'rejected'"),
    ({"prompt": "q", "chosen": None, "rejected": "b"}, r"column 'chosen' is null"),
    ({"prompt": "q", "chosen": "a", "rejected": 5},
     r"column 'rejected' must be a string or a list of chat messages, got int"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, r"column 'chosen' is an empty string"),
    ({"prompt": "q", "chosen": "a", "rejected": " \n\t"}, r"column 'rejected' is an empty string"),
    ({"prompt": "q", "chosen": assistant("  "), "rejected": "b"},
     r"chosen message 0: content must be a non-empty string"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, r"column 'prompt' is an empty string"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, r"column 'prompt' is an empty message list"),
    ({"prompt": {"text": "q"}, "chosen": "a", "rejected": "b"},
     r"column 'prompt' must be a string or a list .* got dict"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, r"chosen and rejected are identical"),
    ({"prompt": ["q"], "chosen": "a", "rejected": "b"},
     r"prompt message 0: expected a dict with 'role' and 'content', got str"),
    ({"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
     r"prompt message 0: role must be one of system, user, assistant, got 'robot'"),
    ({"prompt": "q", "chosen": [{"role": "assistant"}], "rejected": "b"},
     r"chosen message 0: content must be a non-empty string, got None"),
    ({"prompt": ASSISTANT_LAST, "chosen": "a", "rejected": "b"},
     r"the last prompt message must have role 'user', got 'assistant'"),
    ({"prompt": "q", "chosen": "a", "rejected": [Q1]},
     r"the last rejected message must have role 'assistant', got 'user'"),
    ({"prompt": "q", "chosen": [Q2, *assistant("a")], "rejected": "b"},
     r"column 'chosen' has messages before its response that are not the prompt"),
    ({"chosen": "a", "rejected": "b"}, r"no column 'prompt'.*chosen and rejected must be conversations"),
    ({"chosen": [Q1, *assistant("a")], "rejected": [Q2, *assistant("b")]}, r"differ before their final assistant"),
    ({"chosen": assistant("a"), "rejected": assistant("b")}, r"hold no prompt turns"),
    ({"chosen": [Q1, A1, *assistant("a")], "rejected": [Q1, A1, *assistant("b")]},
     r"prompt shared by chosen and rejected must end with a user turn, got 'assistant'"),
    ({"chosen": [Q1, *assistant("a")], "rejected": [Q1, *assistant("a")]}, r"chosen and rejected are identical"),
])
def test_malformed_row_reported_with_index(tmp_path: Path, row: dict, reason: str) -> None:
    rows = [good_row(0), good_row(1), row, good_row(3)]
    pairs, bad = load_pairs(write_jsonl(tmp_path / "p.jsonl", rows), max_bad_share=0.25)
    assert [p.chosen for p in pairs] == ["good 0", "good 1", "good 3"]
    assert len(bad) == 1 and bad[0].index == 2
    assert re.search(reason, bad[0].reason), bad[0].reason


def test_bad_share_boundary(tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(20)]
    rows[7] = {"prompt": "q"}
    path = write_jsonl(tmp_path / "one_bad.jsonl", rows)  # 1 of 20 = 5%: at the threshold, accepted
    pairs, bad = load_pairs(path, max_bad_share=0.05)
    assert len(pairs) == 19 and [b.index for b in bad] == [7]

    rows[12] = {"prompt": "q", "chosen": "a", "rejected": "a"}
    path = write_jsonl(tmp_path / "two_bad.jsonl", rows)  # 2 of 20 = 10%: refused
    with pytest.raises(DataError) as e:
        load_pairs(path, max_bad_share=0.05)
    message = str(e.value)
    for part in ["two_bad.jsonl", "2 of 20 rows", "10.0%", "5.0%", "data.max_bad_share",
                 "row 7: no column 'chosen'", "row 12: chosen and rejected are identical"]:
        assert part in message
    assert len(load_pairs(path, max_bad_share=0.1)[1]) == 2


def test_bad_rows_listed_up_to_ten(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}"} for i in range(12)] + [good_row(i) for i in range(3)]
    with pytest.raises(DataError) as e:
        load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    message = str(e.value)
    assert "row 9: no column 'chosen'" in message
    assert "row 10:" not in message and "and 2 more" in message


def test_no_usable_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(DataError, match=r"none of its 1 rows is a usable preference pair.*row 0: chosen and rejected"):
        load_pairs(path, max_bad_share=1.0)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl has no rows"):
        load_pairs(str(tmp_path / "empty.jsonl"))


def test_split_is_deterministic_and_sized() -> None:
    pairs = [PreferencePair(user(f"q{i}"), f"a{i}", f"b{i}") for i in range(50)]
    train, held_out = split_pairs(pairs, 0.1, seed=3)
    assert (len(train), len(held_out)) == (45, 5)
    assert sorted(p.chosen for p in train + held_out) == sorted(p.chosen for p in pairs)
    assert split_pairs(pairs, 0.1, seed=3) == (train, held_out)
    assert split_pairs(pairs, 0.1, seed=4) != (train, held_out)
    assert [len(s) for s in split_pairs(pairs, 0.001, seed=0)] == [49, 1]  # at least one held out
    assert split_pairs(pairs, 0.0, seed=0)[1] == []
    assert pairs[0].chosen == "a0"  # the input is not shuffled in place


def test_split_leaving_no_training_pairs() -> None:
    pairs = [PreferencePair(user("q"), "a", "b")]
    with pytest.raises(DataError, match=r"holding out 1 of 1 pairs .* leaves no training pairs"):
        split_pairs(pairs, 0.5, seed=0)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    pairs = [
        PreferencePair(user("Why?"), "Because.", "No.", "chat"),
        PreferencePair([SYSTEM, Q1, A1, Q2], "Green.", "Dog."),
    ]
    path = tmp_path / "out" / "pairs.jsonl"
    write_pairs_jsonl(path, pairs)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"prompt": "Why?", "chosen": "Because.", "rejected": "No.", "subset": "chat"}  # TRL standard
    assert rows[1]["prompt"] == [SYSTEM, Q1, A1, Q2] and rows[1]["chosen"] == assistant("Green.")
    assert load_pairs(str(path)) == (pairs, [])
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temporary leftovers

