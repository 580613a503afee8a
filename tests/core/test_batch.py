"""The one travelling batch type: groups of rows, each group with its prompt's id."""

from __future__ import annotations

import pytest
import torch

from selfplay.core.batch import Batch, Sample

MSG = [{"role": "user", "content": "q"}]


def rollout() -> Batch:
    samples = [[Sample([10 + 3 * p + i, 2], f"r{p}{i}", True) for i in range(3)] for p in range(2)]
    return Batch(["4/0", "4/1"], [[1], [2, 2]], [MSG, MSG]).with_samples(samples)


def test_samples_become_rows_grouped_by_prompt():
    b = rollout()
    assert (len(b), b.group) == (2, 3)
    assert b.response_ids == [[10, 2], [11, 2], [12, 2], [13, 2], [14, 2], [15, 2]]
    assert b.grouped(b.texts) == [["r00", "r01", "r02"], ["r10", "r11", "r12"]]
    assert list(b.rows(1)) == [3, 4, 5] and b.row_prompt_ids() == [[1]] * 3 + [[2, 2]] * 3
    assert b.num_tokens() == 12 and b.lengths().tolist() == [2.0] * 6


def test_select_keeps_ids_rows_targets_and_reference_logprobs_aligned():
    b = Batch.examples(["1/0", "1/0", "1/3"], [[1], [1], [3]], [[5], [6], [7], [8], [9], [10]],
                       torch.arange(6.0), 2, "initial")
    b.ref_logps = -torch.arange(6.0)
    part = b.select([2, 0])
    assert part.uids == ["1/3", "1/0"] and part.prompt_ids == [[3], [1]]
    assert part.response_ids == [[9], [10], [5], [6]]
    assert part.targets.tolist() == [4.0, 5.0, 0.0, 1.0] and part.ref_logps.tolist() == [-4.0, -5.0, -0.0, -1.0]
    assert (part.group, part.reference) == (2, "initial")


@pytest.mark.parametrize(("make", "needle"), [
    (lambda: Batch(["1/0"], [[1], [2]]), "one id per prompt; got 1 ids and 2 prompts"),
    (lambda: Batch.examples(["1/0"], [[1]], [[5], [6], [7]], torch.zeros(3), 2, None), "whole groups of 2 rows"),
    (lambda: Batch(["1/0", "1/1"], [[1], [2]]).with_samples([[Sample([5], "a", True)]]), "samples for each of 2"),
    (lambda: Batch(["1/0", "1/1"], [[1], [2]]).with_samples([[Sample([5], "a", True)], []]), "samples for each of 2"),
])
def test_malformed_batches_are_refused(make, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        make()
