"""Pareto fronts, hypervolume, Spearman steerability and the fronts plot (docs/methods.md §3, [DPA] fig. 4).

Hypervolume values are derived by hand in each docstring (maximisation, boxes [reference, p]);
random cases are checked against inclusion-exclusion over all subsets of points.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from selfplay.core import checkpoint
from selfplay.steering.pareto import hypervolume, pareto_mask, plot_fronts, spearman

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def inclusion_exclusion(points: list[list[float]], ref: list[float]) -> float:
    """Union of boxes [ref, p]: sum over non-empty subsets S of (-1)^(|S|+1) * vol(intersection of S)."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = [min(c) for c in zip(*subset, strict=True)]
            total += (-1) ** (k + 1) * math.prod(max(c - r, 0.0) for c, r in zip(corner, ref, strict=True))
    return total


def random_points(n: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, m, generator=g, dtype=torch.float64) * 4 - 1  # some coordinates below 0


# ---- hypervolume: hand values -------------------------------------------------------------------


def test_hypervolume_2d_staircase():
    """(1,3), (2,2), (3,1) over (0,0): columns x in [0,1] height 3, [1,2] height 2, [2,3] height 1 -> 6."""
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6.0)


def test_hypervolume_2d_shifted_reference():
    """Same staircase over (1, 0.5): columns [1,2] height 1.5, [2,3] height 0.5 -> 2; (1,3) has zero width."""
    pts = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(pts, torch.tensor([1.0, 0.5])) == pytest.approx(2.0)


def test_hypervolume_3d_two_overlapping_boxes():
    """Boxes [0,(2,2,2)] (8) and [0,(3,1,1)] (3) overlap in [0,(2,1,1)] (2): 8 + 3 - 2 = 9."""
    assert hypervolume([[2, 2, 2], [3, 1, 1]], [0, 0, 0]) == pytest.approx(9.0)


def test_hypervolume_3d_mirrored_boxes():
    """(1,2,3) and (3,2,1) over 0: 6 + 6 - overlap (1,2,1) = 2 -> 10; over (0,1,0): 3 + 3 - 1 = 5."""
    pts = [[1, 2, 3], [3, 2, 1]]
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(10.0)
    assert hypervolume(pts, [0, 1, 0]) == pytest.approx(5.0)


def test_hypervolume_m1_is_max_minus_reference():
    """m = 1: [0.5, 2.5, 1.0] over 0.5 -> 2.5 - 0.5 = 2; everything at or below the reference -> 0."""
    assert hypervolume([[0.5], [2.5], [1.0]], [0.5]) == pytest.approx(2.0)
    assert hypervolume([[-1.0], [0.5]], [0.5]) == 0.0


def test_hypervolume_empty_and_returns_float():
    assert hypervolume([], [0.0, 0.0]) == 0.0
    assert hypervolume(torch.zeros(0, 3), [0.0, 0.0, 0.0]) == 0.0
    assert type(hypervolume(torch.tensor([[1.0, 1.0]]), torch.zeros(2))) is float


# ---- hypervolume: invariants --------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(m: int):
    for seed in range(5):
        pts = random_points(7, m, seed=seed + 10 * m)
        ref = [-0.5] * m
        assert hypervolume(pts, ref) == pytest.approx(inclusion_exclusion(pts.tolist(), ref), rel=1e-12, abs=1e-12)


def test_dominated_point_leaves_hypervolume_unchanged():
    """(1.5, 1.5) lies under (2, 2): the staircase keeps volume 6."""
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1.5, 1.5]], [0, 0]) == pytest.approx(6.0)
    assert hypervolume([[2, 2, 2], [3, 1, 1], [1, 1, 2]], [0, 0, 0]) == pytest.approx(9.0)


def test_point_below_reference_adds_nothing():
    """(5, -1) is below the reference in y, (-2, 4) in x: their clipped boxes are flat; (1, 1) alone gives 1."""
    assert hypervolume([[1, 1], [5, -1], [-2, 4]], [0, 0]) == pytest.approx(1.0)
    assert hypervolume([[2, 2, -0.1]], [0, 0, 0]) == 0.0


def test_hypervolume_permutation_invariant():
    pts = random_points(9, 3, seed=1)
    expected = hypervolume(pts, [0.0, 0.0, 0.0])
    for seed in range(4):
        perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed))
        assert hypervolume(pts[perm], [0.0, 0.0, 0.0]) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_monotone_when_a_point_improves():
    """Raising any coordinate of any point never shrinks the volume; raising a front point strictly grows it."""
    pts = random_points(6, 3, seed=2)
    ref = [-1.0, -1.0, -1.0]
    base = hypervolume(pts, ref)
    for i in range(6):
        for j in range(3):
            better = pts.clone()
            better[i, j] += 0.25
            assert hypervolume(better, ref) >= base - 1e-12
    staircase = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    staircase[1][0] = 2.5  # column [2, 2.5] gains height 1: 6 -> 6.5
    assert hypervolume(staircase, [0, 0]) == pytest.approx(6.5)


def test_hypervolume_accepts_float32_and_lists_alike():
    pts = [[0.25, 0.75], [0.5, 0.5]]
    assert hypervolume(torch.tensor(pts, dtype=torch.float32), [0, 0]) == hypervolume(pts, [0.0, 0.0])


@pytest.mark.parametrize(
    "points, reference, match",
    [
        ([[1.0, 2.0, 3.0]], [0.0, 0.0], r"\(N, 2\)"),
        ([1.0, 2.0], [0.0, 0.0], r"\(N, 2\)"),
        ([[[1.0, 2.0]]], [0.0, 0.0], r"\(N, 2\)"),
        ([[1.0, 2.0]], [[0.0, 0.0]], "shape \\(m,\\)"),
        ([[1.0]], [], "shape \\(m,\\)"),
        ([[1.0, float("nan")]], [0.0, 0.0], "finite"),
        ([[1.0, float("inf")]], [0.0, 0.0], "finite"),
        ([[1.0, 2.0]], [0.0, float("nan")], "finite"),
    ],
)
def test_hypervolume_rejects_bad_input(points, reference, match):
    with pytest.raises(ValueError, match=match):
        hypervolume(points, reference)


# ---- pareto_mask --------------------------------------------------------------------------------


def test_pareto_mask_staircase_with_dominated_points():
    pts = [[1, 3], [2, 2], [3, 1], [1.5, 1.5], [1, 2.5], [0, 0]]
    assert pareto_mask(pts) == [True, True, True, False, False, False]


def test_pareto_mask_duplicates_and_weak_dominance():
    """Twins stay on the front; (2, 1) is dominated by (2, 2), equal in x but better in y."""
    assert pareto_mask([[2, 2], [2, 2], [2, 1]]) == [True, True, False]


def test_pareto_mask_single_point_and_3d():
    assert pareto_mask(torch.tensor([[0.0, -1.0]])) == [True]
    assert pareto_mask([[1, 2, 3], [3, 2, 1], [1, 2, 1], [0, 3, 0]]) == [True, True, False, True]


def test_pareto_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        pareto_mask([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        pareto_mask([[1.0, float("nan")]])


# ---- spearman -----------------------------------------------------------------------------------


def test_spearman_one_swap():
    """Ranks differ by d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * 15) = 0.8."""
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_spearman_ties_use_average_ranks():
    """x = [1, 2, 2, 3] ranks (1, 2.5, 2.5, 4); y ranks (1, 2, 3, 4). Centred: dx = (-1.5, 0, 0, 1.5),
    dy = (-1.5, -0.5, 0.5, 1.5); sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> 4.5 / sqrt(22.5) = sqrt(0.9)."""
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(math.sqrt(0.9))
    assert spearman(torch.tensor([0.1, 0.5, 0.5, 0.9]), [10, 20, 30, 40]) == pytest.approx(math.sqrt(0.9))


def test_spearman_perfect_and_rank_only():
    assert spearman([1, 2, 3, 4, 5], [2, 4, 8, 16, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0.1, 0.2], [3.0, -3.0]) == pytest.approx(-1.0)


def test_spearman_constant_is_zero():
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert spearman([1, 2, 3], [7, 7, 7]) == 0.0


@pytest.mark.parametrize("x, y", [([1, 2, 3], [1, 2]), ([1], [1]), ([], []), ([[1, 2]], [[1, 2]]),
                                  ([1, float("nan")], [1, 2])])
def test_spearman_rejects_bad_input(x, y):
    with pytest.raises(ValueError):
        spearman(x, y)


# ---- plot_fronts --------------------------------------------------------------------------------


FRONTS = [
    ("initial", torch.tensor([[1.0, 0.2], [0.9, 0.5], [0.6, 0.8]])),
    ("iter 1", torch.tensor([[1.2, 0.3], [1.1, 0.6], [0.8, 1.0]])),
    ("iter 2", [[1.4, 0.3], [1.3, 0.7], [1.0, 1.2]]),
]
NAMES = ["helpfulness", "verbosity"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_plot_fronts_writes_a_png(tmp_path: Path):
    from matplotlib import image

    path = tmp_path / "eval" / "fronts.png"
    plot_fronts(FRONTS, NAMES, path, reference=[0.0, 0.0])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.shape == (540, 720, 4)  # 6 x 4.5 inches at 120 dpi, RGBA
    assert pixels.std() > 0  # something was drawn
    assert leftovers(path.parent) == []


def test_plot_fronts_replaces_existing_file(tmp_path: Path):
    path = tmp_path / "fronts.png"
    path.write_bytes(b"old")
    plot_fronts(FRONTS[:1], NAMES, path, x=0, y=1)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert leftovers(tmp_path) == []


def test_plot_fronts_failure_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch):
    """A failure after the temporary PNG is complete (the rename) must remove it and not touch the target."""
    path = tmp_path / "fronts.png"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        plot_fronts(FRONTS, NAMES, path)
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_plot_fronts_parent_is_a_file(tmp_path: Path):
    """A destination that cannot be created (its parent is a file) raises and writes nothing."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        plot_fronts(FRONTS, NAMES, blocker / "fronts.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]
