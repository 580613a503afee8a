"""The report: a two-iteration run's report.html opened in headless Chromium renders every plot; several runs
compare; the Markdown summary; a directory without metrics is refused in one line."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from selfplay.core.checkpoint import read_metrics
from selfplay.report import main as report_main
from selfplay.run import main as run_main


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's headless Chromium, installed here where it is missing (the test setup's one system package)."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True)
        found = shutil.which("chromium")
    assert found, "chromium could not be installed (apt-get install chromium)"
    return found


@pytest.fixture(scope="module")
def two_runs(hf_run, tmp_path_factory):
    """Two two-iteration runs (GPO and DPO) on the embedded world, each with its report written by the run: GPO is
    the session's ``hf_run`` (the same settings: the smoke preset's default algorithm), copied."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(hf_run, root / "gpo")
    assert run_main(["smoke", "iter=2", "algo=dpo", f"run.dir={root / 'dpo'}", "generator.backend=hf",
                     "run.progress=false"]) == 0
    return root


def chromium_args(chromium: str, tmp_path) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files"]


def test_the_runs_report_renders_every_plot_in_chromium(two_runs, chromium, tmp_path):
    report = two_runs / "gpo" / "report.html"
    assert report.exists() and (two_runs / "gpo" / "report_files" / "win_rate_vs_initial.png").exists()
    # a page that opens the report in a frame and writes, once it has loaded, how many of its images loaded
    probe = tmp_path / "probe.html"
    probe.write_text(f"""<html><body><iframe id=f src="{report.as_uri()}" width=1200 height=900></iframe><script>
        document.getElementById('f').onload = () => {{
          const images = [...document.getElementById('f').contentDocument.images];
          const ok = images.filter(i => i.complete && i.naturalWidth > 0).length;
          document.body.insertAdjacentHTML('beforeend', `<p id=result>images ${{ok}} of ${{images.length}}</p>`);
        }};</script></body></html>""")
    dom = subprocess.run([*chromium_args(chromium, tmp_path), "--virtual-time-budget=10000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "images 5 of 5" in dom, dom[-500:]  # two win rates, length, stages, tokens/s
    shot = tmp_path / "shot.png"
    subprocess.run([*chromium_args(chromium, tmp_path), "--window-size=1200,1600", f"--screenshot={shot}",
                    report.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.01  # not blank: lines, text and plots drawn


def test_several_runs_compare_and_summarise_as_markdown(two_runs, tmp_path, capsys):
    out = tmp_path / "both.html"
    assert report_main([str(two_runs / "gpo"), str(two_runs / "dpo"), "--out", str(out), "--embed"]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 11  # the overlay, then five plots a run
    assert "Runs compared (last iteration)" in page and not (tmp_path / "report_files").exists()
    capsys.readouterr()
    assert report_main([str(two_runs / "gpo"), str(two_runs / "dpo"), "--format", "md"]) == 0
    text = capsys.readouterr().out
    last = read_metrics(two_runs / "dpo")[-1]
    lo, hi = last["win_rate_vs_initial_ci"]
    assert f"| {last['win_rate_vs_initial']:.3f} ± {(hi - lo) / 2:.3f} |" in text
    assert text.startswith("## gpo") and "## comparison (last iteration)" in text


def test_a_directory_without_metrics_is_refused(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path} has no metrics.jsonl (not a run directory, or no "
                                       "iteration finished yet)\n")


def test_the_report_is_rewritten_atomically_each_iteration(two_runs):
    """The run wrote it after its last iteration: it holds both iterations' rows and no temporary file is left."""
    page = (two_runs / "dpo" / "report.html").read_text()
    assert "<td>2</td>" in page and not list((two_runs / "dpo").glob("*.tmp-*"))
    assert not list((two_runs / "dpo" / "report_files").glob("*.tmp-*"))


def test_a_directional_runs_report_has_its_hypervolume_and_fronts(tmp_path):
    """From metrics lines alone (no Ray): a DPA run's hypervolume per iteration and its pareto.png beside."""
    import json

    from selfplay.core.html_report import write

    run = tmp_path / "dpa"
    run.mkdir()
    lines = [{"iteration": t, "win_rate_vs_initial": 0.5 + t / 20, "win_rate_vs_initial_ci": [0.4, 0.7],
              "lc_win_rate_vs_initial": 0.52, "win_rate_vs_previous": 0.55, "mean_response_length": 20.0 + t,
              "train_loss": 0.3, "hypervolume": 1000.0 * t, "generate_s": 2.0, "train_s": 1.0,
              "generate_tokens_per_s": 100.0} for t in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "pareto.png").write_bytes(_tiny_png())
    write({"dpa": run}, run / "report.html")
    page = (run / "report.html").read_text()
    assert 'src="report_files/hypervolume.png"' in page and 'src="report_files/pareto.png"' in page
    assert (run / "report_files" / "pareto.png").read_bytes() == _tiny_png()
    assert "<td>0.650 ± 0.150</td>" in page and "<td>0.520</td>" in page  # iteration 3: rate ± half-width, lc


def _tiny_png() -> bytes:
    import io

    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buffer, format="png")
    return buffer.getvalue()
