"""A run's report: ``report.html`` with its plots beside it (``report_files/``) or embedded, from the run
directory alone (``metrics.jsonl``, ``pareto.png``), so it can be written during a run, after it, or for several.

- win rates vs pi_0 and vs pi_{t-1} per iteration with their 95% bands: scorer and oracle, raw and
  length-controlled;
- mean response length; each stage's seconds stacked per iteration; generation tokens/s;
- DPA's hypervolume per iteration and the fronts (``pareto.png``) when present;
- the sample responses of each iteration;
- with several runs, an overlay of their win rates and a table comparing their last iterations.

``markdown`` is the same summary as text for a terminal.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from selfplay.core.checkpoint import atomic_write_bytes, atomic_write_text, read_metrics

REPORT = "report.html"
SAMPLE_COLUMNS = ("prompt", "initial", "current", "p_scorer", "p_oracle")
FILES = "report_files"
STAGES = ("generate", "score", "train", "sleep", "wake", "sync", "eval", "checkpoint")
RATES = (("win_rate_vs_initial", "vs pi_0"), ("win_rate_vs_previous", "vs pi_{t-1}"))


def _figure(width: float = 6.4, height: float = 3.6):
    """A figure and its axes, without pyplot's global state: the run writes the report from a thread of its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _band(ax, records: list[dict], key: str, label: str, color, style: str = "-") -> None:
    """One win rate's line over the iterations, with its 95% interval as a band when recorded."""
    points = [(r["iteration"], r[key], r.get(f"{key}_ci")) for r in records if key in r]
    if not points:
        return
    ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, marker="o", label=label)
    bands = [p for p in points if p[2]]
    if bands:
        ax.fill_between([p[0] for p in bands], [p[2][0] for p in bands], [p[2][1] for p in bands], color=color,
                        alpha=0.15)


def win_rate_plot(records: list[dict], key: str, title: str) -> bytes:
    fig, ax = _figure()
    for prefix, who, color in (("", "scorer", "tab:blue"), ("oracle_", "oracle", "tab:orange")):
        _band(ax, records, f"{prefix}{key}", who, color)
        _band(ax, records, f"lc_{prefix}{key}", f"{who}, length-controlled", color, "--")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="iteration", ylabel="win rate", title=f"win rate {title} (95% bands over prompts)")
    ax.legend(fontsize=8)
    return _png(fig)


def series_plot(records: list[dict], key: str, ylabel: str, title: str) -> bytes:
    fig, ax = _figure()
    ax.plot([r["iteration"] for r in records], [r.get(key, float("nan")) for r in records], marker="o")
    ax.set(xlabel="iteration", ylabel=ylabel, title=title)
    return _png(fig)


def stage_plot(records: list[dict]) -> bytes:
    fig, ax = _figure()
    iterations, bottom = [r["iteration"] for r in records], [0.0] * len(records)
    for stage in STAGES:
        seconds = [r.get(f"{stage}_s", 0.0) for r in records]
        if any(seconds):
            ax.bar(iterations, seconds, bottom=bottom, label=stage)
            bottom = [b + s for b, s in zip(bottom, seconds)]
    ax.set(xlabel="iteration", ylabel="seconds", title="stage times")
    ax.legend(fontsize=8)
    return _png(fig)


def overlay_plot(runs: dict[str, list[dict]], key: str) -> bytes:
    """Several runs' win rates vs pi_0 (the oracle's when every run has one, else the scorer's)."""
    fig, ax = _figure()
    import matplotlib

    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, records) in enumerate(runs.items()):
        _band(ax, records, key, name, colors[i % len(colors)])
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="iteration", ylabel="win rate", title=f"{key} by run (95% bands)")
    ax.legend(fontsize=8)
    return _png(fig)


def stage_seconds(r: dict) -> float:
    """An iteration's seconds: the sum of its stages' (``generate_s``, ...)."""
    return sum(r.get(f"{stage}_s", 0.0) for stage in STAGES)


def rate_text(r: dict, key: str) -> str:
    """``0.777 ± 0.030`` (the half-width of the 95% interval); a record from before intervals: the rate alone."""
    if key not in r:
        return "-"
    if f"{key}_ci" not in r:
        return f"{r[key]:.3f}"
    lo, hi = r[f"{key}_ci"]
    return f"{r[key]:.3f} ± {(hi - lo) / 2:.3f}"


def number(r: dict, key: str) -> str:
    return f"{r[key]:.3f}" if key in r else "-"


def comparison_rows(runs: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """The last iteration of each run: its win rates with intervals, length-controlled ones, length, time."""
    head = ["run", "iterations", "vs pi_0 (scorer)", "lc", "vs pi_0 (oracle)", "lc (oracle)", "vs pi_{t-1}",
            "length", "seconds"]
    rows = []
    for name, records in runs.items():
        last = records[-1]
        seconds = sum(stage_seconds(r) for r in records)
        rows.append([name, str(last["iteration"]), rate_text(last, "win_rate_vs_initial"),
                     number(last, "lc_win_rate_vs_initial"),
                     rate_text(last, "oracle_win_rate_vs_initial"),
                     number(last, "lc_oracle_win_rate_vs_initial"),
                     rate_text(last, "win_rate_vs_previous"), f"{last['mean_response_length']:.1f}",
                     f"{seconds:.0f}"])
    return head, rows


def iteration_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["iteration", "vs pi_0", "lc", "vs pi_{t-1}", "oracle vs pi_0", "oracle lc", "length", "loss"]
    rows = [[str(r["iteration"]), rate_text(r, "win_rate_vs_initial"), number(r, "lc_win_rate_vs_initial"),
             rate_text(r, "win_rate_vs_previous"), rate_text(r, "oracle_win_rate_vs_initial"),
             number(r, "lc_oracle_win_rate_vs_initial"), f"{r['mean_response_length']:.1f}",
             "-" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"] for r in records]
    return head, rows


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a cell's ``|`` escaped and its line breaks turned to spaces."""
    cell = lambda c: c.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def markdown(runs: dict[str, list[dict]]) -> str:
    """The terminal summary: each run's iterations, then (several runs) the comparison."""
    parts = []
    for name, records in runs.items():
        parts += [f"## {name}", "", markdown_table(*iteration_rows(records)), ""]
    if len(runs) > 1:
        parts += ["## comparison (last iteration)", "", markdown_table(*comparison_rows(runs)), ""]
    return "\n".join(parts)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)  # noqa: E731
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', head)}</tr>{body}</table>"


def _samples_html(records: list[dict]) -> str:
    blocks = []
    for r in reversed(records):
        samples = r.get("samples") or []
        if samples:
            head = [k for k in SAMPLE_COLUMNS if k in samples[0]]
            rows = [[f"{s[k]:.3f}" if isinstance(s[k], float) else s[k] for k in head] for s in samples]
            is_open = " open" if r is records[-1] else ""
            blocks.append(f"<details{is_open}><summary>iteration {r['iteration']}</summary>{_html_table(head, rows)}"
                          "</details>")
    return "".join(blocks)


def write(runs: dict[str, Path], out: Path, embed: bool = False) -> Path:
    """The report of ``runs`` (name -> run directory) at ``out`` (HTML), its PNGs in ``out``'s ``report_files/``
    (or embedded); every file written atomically.  Returns ``out``."""
    metrics = {name: read_metrics(path) for name, path in runs.items()}
    metrics = {name: records for name, records in metrics.items() if records}
    if not metrics:
        raise ValueError(f"no completed iteration in {', '.join(str(p) for p in runs.values())}: nothing to report")
    images: list[tuple[str, str, bytes]] = []  # (file name, caption, png)
    for name, records in metrics.items():
        tag = f"{name}_" if len(metrics) > 1 else ""
        for key, title in RATES:
            images.append((f"{tag}{key}.png", f"{name}: win rate {title}", win_rate_plot(records, key, title)))
        images.append((f"{tag}length.png", f"{name}: mean response length",
                       series_plot(records, "mean_response_length", "tokens", "mean response length")))
        images.append((f"{tag}stages.png", f"{name}: stage times", stage_plot(records)))
        images.append((f"{tag}tokens.png", f"{name}: generation tokens/s",
                       series_plot(records, "generate_tokens_per_s", "tokens / s", "generation throughput")))
        if any("hypervolume" in r for r in records):
            images.append((f"{tag}hypervolume.png", f"{name}: hypervolume of the front",
                           series_plot(records, "hypervolume", "hypervolume", "hypervolume (DPA)")))
        pareto = runs[name] / "pareto.png"
        if pareto.exists():
            images.append((f"{tag}pareto.png", f"{name}: Pareto fronts", pareto.read_bytes()))
    if len(metrics) > 1:
        key = ("oracle_win_rate_vs_initial" if all("oracle_win_rate_vs_initial" in r[-1] for r in metrics.values())
               else "win_rate_vs_initial")
        images.insert(0, ("overlay.png", f"runs compared: {key}", overlay_plot(metrics, key)))
    files = out.parent / FILES
    figures = []
    for file, caption, png in images:
        if embed:
            src = "data:image/png;base64," + base64.b64encode(png).decode()
        else:
            atomic_write_bytes(files / file, png)
            src = f"{FILES}/{file}"
        figures.append(f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                       "</figcaption></figure>")
    sections = []
    if len(metrics) > 1:
        sections.append("<h2>Runs compared (last iteration)</h2>" + _html_table(*comparison_rows(metrics)))
    for name, records in metrics.items():
        sections.append(f"<h2>{html.escape(name)}</h2>" + _html_table(*iteration_rows(records))
                        + "<h3>Samples (pi_0 and pi_t on held-out prompts)</h3>" + _samples_html(records))
    title = html.escape(", ".join(metrics))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>selfplay report: {title}</title><style>"
            "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.5em}img{max-width:100%}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
            "font-size:90%;vertical-align:top;max-width:40em}</style></head><body>"
            f"<h1>selfplay report</h1><div>{''.join(figures)}</div>{''.join(sections)}</body></html>")
    atomic_write_text(out, page)
    return out
