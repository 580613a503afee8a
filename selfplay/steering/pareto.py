"""Empirical Pareto fronts of a direction-conditioned policy (docs/methods.md §3; [DPA] sec. 3.1, fig. 4).

Evaluating a policy on a grid of G preference directions gives one point per direction: the
mean of each of the m reward attributes over held-out responses, so a policy is a (G, m)
tensor.  Everything here maximises every coordinate.

- ``pareto_mask``: the points no other point dominates (the empirical front).
- ``hypervolume``: the measure of the region the points dominate above a fixed reference
  point.  With one reference for every iteration the numbers are comparable across
  iterations, and a front that dominates another never has a smaller hypervolume.
- ``spearman``: rank correlation, for steerability (does an attribute follow the direction?).
- ``plot_fronts``: [DPA] fig. 4, one curve per iteration, written atomically as a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from selfplay.core.checkpoint import atomic_write_bytes


def _as_matrix(points: Any, m: int | None = None) -> torch.Tensor:
    """``points`` as a finite float64 (N, m) tensor; ValueError otherwise."""
    pts = torch.as_tensor(points, dtype=torch.float64)
    if pts.shape == (0,) and m is not None:  # an empty nested list: no points
        pts = pts.reshape(0, m)
    if pts.ndim != 2 or (m is not None and pts.shape[1] != m):
        expected = "(N, m)" if m is None else f"(N, {m}), m = len(reference)"
        raise ValueError(f"points must have shape {expected}, got {tuple(pts.shape)}")
    if not pts.isfinite().all():
        raise ValueError("points must be finite (no NaN or inf)")
    return pts


def pareto_mask(points: Any) -> list[bool]:
    """For each of the (N, m) points, True if no other point dominates it.

    q dominates p if q >= p in every coordinate and q > p in at least one, so a duplicate
    point is not dominated by its twin and both stay on the front.
    """
    pts = _as_matrix(points)
    ge = (pts[None, :, :] >= pts[:, None, :]).all(-1)  # (N, N): [i, j] = point j >= point i everywhere
    gt = (pts[None, :, :] > pts[:, None, :]).any(-1)  # (N, N): [i, j] = point j > point i somewhere
    return (~(ge & gt).any(1)).tolist()


def _slab_volume(points: list[list[float]], ref: list[float]) -> float:
    """Measure of the union of boxes [ref, p] for points already clipped to p >= ref.

    Sweeps the last coordinate from the top: between consecutive levels the cross-section
    is the (m-1)-dimensional union of the boxes of the points at or above that level.
    O(N^m) time: fine for evaluation grids (N = 50, m = 4 takes under 0.1 s).
    """
    if not points:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in points) - ref[0]
    points = sorted(points, key=lambda p: p[-1], reverse=True)
    volume = 0.0
    for i, p in enumerate(points):
        below = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        if p[-1] > below:
            volume += (p[-1] - below) * _slab_volume([q[:-1] for q in points[: i + 1]], ref[:-1])
    return volume


def hypervolume(points: Any, reference: Any) -> float:
    """Exact Lebesgue measure of the region dominated by ``points`` (N, m) and dominating
    ``reference`` (m,), maximising every coordinate.

    Each point is clipped to the reference first, so a point below the reference in some
    coordinate adds nothing.  ``points`` and ``reference`` may be tensors or nested lists.
    """
    ref = torch.as_tensor(reference, dtype=torch.float64)
    if ref.ndim != 1 or ref.numel() == 0:
        raise ValueError(f"reference must have shape (m,) with m >= 1, got {tuple(ref.shape)}")
    if not ref.isfinite().all():
        raise ValueError("reference must be finite (no NaN or inf)")
    pts = _as_matrix(points, m=ref.numel())
    clipped = torch.maximum(pts, ref)  # (N, m)
    return float(_slab_volume(clipped.tolist(), ref.tolist()))


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``v`` (N,); tied values share the mean of the ranks they span."""
    less = (v[None, :] < v[:, None]).sum(1)  # (N,) values strictly below each
    equal = (v[None, :] == v[:, None]).sum(1)  # (N,) ties, itself included
    return less + (equal + 1) / 2


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation of ``x`` and ``y``: the Pearson correlation of their average ranks.

    If either input is constant its ranks have zero variance and the correlation is 0/0;
    we return 0.0 (no monotone relation can be shown) so the value stays finite for
    metrics.jsonl, which rejects NaN.  Raises ValueError on a length mismatch, fewer than
    2 points, non-1-D or non-finite inputs.
    """
    xs, ys = (torch.as_tensor(v, dtype=torch.float64) for v in (x, y))
    if xs.ndim != 1 or ys.ndim != 1 or len(xs) != len(ys):
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {tuple(xs.shape)} and {tuple(ys.shape)}")
    if len(xs) < 2:
        raise ValueError(f"spearman needs at least 2 points, got {len(xs)}")
    if not (xs.isfinite().all() and ys.isfinite().all()):
        raise ValueError("x and y must be finite (no NaN or inf)")
    dx, dy = (r - r.mean() for r in (_average_ranks(xs), _average_ranks(ys)))
    sxx, syy = (dx * dx).sum().item(), (dy * dy).sum().item()
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return max(-1.0, min(1.0, (dx * dy).sum().item() / (sxx * syy) ** 0.5))


def plot_fronts(
    fronts: Sequence[tuple[str, Any]],
    names: Sequence[str],
    path: str | Path,
    x: int = 1,
    y: int = 0,
    reference: Any = None,
) -> None:
    """Draw [DPA] fig. 4: one line per (label, points (G, m)) through its points in grid order.

    Axis x is attribute ``names[x]`` (default verbosity), axis y is ``names[y]`` (default
    helpfulness).  Colours run along a sequential colormap, so later entries of ``fronts``
    are darker; ``reference`` (m,), if given, is a grey square.  Uses a bare Agg ``Figure``
    (no pyplot, so no global backend or figure state changes) and writes the PNG
    atomically (``checkpoint.atomic_write_bytes``).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["Blues"]
    for i, (label, points) in enumerate(fronts):
        pts = _as_matrix(points)  # (G, m)
        shade = 0.35 + 0.65 * i / max(len(fronts) - 1, 1)  # pale enough to see, darkest last
        ax.plot(pts[:, x].tolist(), pts[:, y].tolist(), marker="o", color=cmap(shade), label=label)
    if reference is not None:
        ref = torch.as_tensor(reference, dtype=torch.float64)
        ax.plot([ref[x].item()], [ref[y].item()], marker="s", color="grey", linestyle="none", label="reference")
    ax.set_xlabel(names[x])
    ax.set_ylabel(names[y])
    ax.set_title("Empirical Pareto fronts")
    ax.legend()
    fig.tight_layout()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
