"""`ganforge report`: the page of a tiny run of each data kind, read back (it parses, a figure per
metric, the run's numbers in its plots, the diagnosis), compared runs, and a real browser's rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ganforge.cli import main
from ganforge.diagnose import FAILURE_MODES
from ganforge.report import MAX_PICTURES, write_report
from helpers import assert_clean_error, digits_args, read_metrics, ring8_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """What a report page holds: figures by metric, their plots and series, diagnosis rows, images, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.figures: dict[str, list[dict]] = {}  # data-metric -> its plots: {"attrs": svg attributes, "paths": {series: d}}
        self.rows: dict[str, dict] = {}  # data-mode -> {"class": ..., "text": ...} (the last run's)
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self._figure, self._row = None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v and not v.startswith("data:")]
        if tag == "figure" and "data-metric" in attrs:
            self._figure = self.figures.setdefault(attrs["data-metric"], [])
        elif tag == "svg" and attrs.get("class") == "plot" and self._figure is not None:
            self._figure.append({"attrs": attrs, "paths": {}})
        elif tag == "path" and "data-series" in attrs and self._figure:
            self._figure[-1]["paths"][attrs["data-series"]] = attrs["d"]
        elif tag == "tr" and "data-mode" in attrs:
            self._row = self.rows[attrs["data-mode"]] = {"class": attrs.get("class"), "text": ""}
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row["text"] += data


def plotted(plot: dict, series: str) -> list[tuple[float, float]]:
    """The data values of a series, read back from its SVG path through the plot's ranges and box."""
    x_low, x_high = map(float, plot["attrs"]["data-x"].split())
    y_low, y_high = map(float, plot["attrs"]["data-y"].split())
    left, top, width, height = map(float, plot["attrs"]["data-box"].split())
    points = re.findall(r"[ML]([-\d.]+),([-\d.]+)", plot["paths"][series])
    return [
        (x_low + (float(px) - left) / width * (x_high - x_low), y_high - (float(py) - top) / height * (y_high - y_low))
        for px, py in points
    ]


def assert_close(points: list[tuple[float, float]], expected: list[tuple[float, float]], plot: dict) -> None:
    x_span = np.ptp([float(v) for v in plot["attrs"]["data-x"].split()])
    y_span = np.ptp([float(v) for v in plot["attrs"]["data-y"].split()])
    assert len(points) == len(expected)
    np.testing.assert_allclose(np.array(points)[:, 0], [x for x, _ in expected], atol=1e-3 * x_span)
    np.testing.assert_allclose(np.array(points)[:, 1], [y for _, y in expected], atol=1e-3 * y_span)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny runs with evaluation: a 2D mixture (ring8), images (digits) and vectors (.npy)."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANFORGE_CACHE", str(root / "cache"))
        vectors = root / "blobs.npy"
        rng = np.random.default_rng(0)
        np.save(vectors, np.concatenate([rng.normal(m, 0.3, (150, 3)) for m in (-2, 0, 2)]).astype(np.float32))
        made = {
            "ring8": ring8_args(root / "ring8", 20, "eval_every=10", "eval_n=300"),
            "digits": digits_args(root / "digits", 10, "eval_every=5", "eval_n=200"),
            "vectors": ring8_args(root / "vectors", 20, "eval_every=10", "eval_n=200"),
        }
        made["vectors"][made["vectors"].index("ring8")] = str(vectors)
        for args in made.values():
            assert main(args) == 0
    return {name: root / name for name in made}


@pytest.mark.parametrize("kind", ["ring8", "digits", "vectors"])
def test_the_page_of_each_data_kind_holds_a_figure_per_metric_and_the_diagnosis(runs, kind):
    page_path = write_report([runs[kind]])
    assert page_path == runs[kind] / "report.html"
    page = Page(page_path.read_text(encoding="utf-8"))
    records = read_metrics(runs[kind])
    metrics = {name for r in records if "eval" in r for name in r["eval"]}
    assert metrics and metrics <= set(page.figures)
    assert all(len(page.figures[m]) == 2 for m in metrics)  # against steps and against training time
    assert {"losses", "d_outputs"} <= set(page.figures)
    assert set(page.rows) == set(FAILURE_MODES)
    # A 20-step run may well be collapsed (the vectors one is: sharp samples, no recall); healthy runs are judged in test_diagnose.
    states = {"absent": "not seen", "present": "present since step", "past": "gone by the end", "unmeasured": "not measured"}
    assert all(states[row["class"]] in row["text"] for row in page.rows.values())
    pictures = sorted((runs[kind] / "samples").glob("*.png"))
    assert len(page.images) == min(len(pictures), MAX_PICTURES)  # vectors of 3 dimensions draw none
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not page.tags & {"script", "link", "iframe", "object"} and page.urls == []


def test_the_plots_show_the_runs_numbers(runs):
    run = runs["digits"]
    page = Page(write_report([run]).read_text(encoding="utf-8"))
    records = read_metrics(run)
    logs = [r for r in records if "d_loss" in r]
    (losses,) = page.figures["losses"]
    assert_close(plotted(losses, "d_loss"), [(r["step"], r["d_loss"]) for r in logs], losses)
    assert_close(plotted(losses, "g_loss"), [(r["step"], r["g_loss"]) for r in logs], losses)
    (scores,) = page.figures["d_outputs"]
    assert_close(plotted(scores, "D(G(z))"), [(r["step"], r["d_fake"]) for r in logs], scores)
    evals = [r for r in records if "eval" in r]
    by_step, by_time = page.figures["fd"]
    assert_close(plotted(by_step, "fd"), [(r["step"], r["eval"]["fd"]) for r in evals], by_step)
    assert_close(plotted(by_time, "fd"), [(r["seconds"], r["eval"]["fd"]) for r in evals], by_time)


def test_a_failure_mode_in_the_records_shows_in_the_diagnosis(runs, copy_run):
    run = copy_run(runs["ring8"])
    with open(run / "metrics.jsonl", "a") as f:
        for step in range(25, 60, 5):
            f.write(json.dumps({"step": step, "d_loss": 0.1, "g_loss": 4.0, "d_real": 0.97, "d_fake": 0.03, "seconds": 1.0,
                                "steps_per_s": 10.0, "skipped_steps": 0}) + "\n")
    page = Page(write_report([run]).read_text(encoding="utf-8"))
    winning = page.rows["discriminator_winning"]
    assert winning["class"] == "present" and "present since step 25" in winning["text"]
    assert "D(x) 0.970" in winning["text"] and "lr_d=" in winning["text"]
    assert page.rows["divergence"]["class"] == "absent"


def test_several_runs_share_the_plots_in_the_first_runs_folder(runs, cli):
    result = cli("report", runs["ring8"], runs["vectors"])
    page_path = runs["ring8"] / "compare.html"
    assert result.code == 0 and f"wrote {page_path}" in result.err
    page = Page(page_path.read_text(encoding="utf-8"))
    (losses,) = page.figures["losses"]
    assert set(losses["paths"]) == {"ring8: d_loss", "ring8: g_loss", "vectors: d_loss", "vectors: g_loss"}
    vectors_logs = [r for r in read_metrics(runs["vectors"]) if "d_loss" in r]
    assert_close(plotted(losses, "vectors: g_loss"), [(r["step"], r["g_loss"]) for r in vectors_logs], losses)
    # metrics only one run reports are plotted for that run alone
    assert set(page.figures["hq_percent"][0]["paths"]) == {"ring8"} and set(page.figures["fd"][0]["paths"]) == {"vectors"}
    out = runs["vectors"] / "both.html"
    assert cli("report", runs["ring8"], runs["vectors"], "--out", out).code == 0 and out.is_file()


def test_report_refuses_what_is_not_a_run_in_one_line(cli, tmp_path):
    assert_clean_error(cli("report", tmp_path / "missing"), "is not a run folder", "config.json and metrics.jsonl")
    (tmp_path / "folder").mkdir()
    assert_clean_error(cli("report", tmp_path / "folder"), "is not a run folder")


def test_report_of_a_run_cut_short_notes_the_broken_line(runs, copy_run):
    run = copy_run(runs["ring8"])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "d_lo')
    text = write_report([run]).read_text(encoding="utf-8")
    assert "1 line(s) of metrics.jsonl were not JSON records" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package chromium; .ci/run installs it)")
def test_chromium_renders_the_page(runs, tmp_path):
    from PIL import Image

    page_path = write_report([runs["digits"]])
    screenshot = tmp_path / "page.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             f"--screenshot={screenshot}", "--window-size=1200,2400", page_path.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (2400, 1200, 3)
    ink = (pixels < 200).any(axis=2)  # text, lines and pictures against the white page
    assert ink.mean() > 0.01
    colours = {tuple(p) for p in pixels[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 50  # plot lines in several colours, greys of text and grids, sample pictures
    # the plots' blue and red lines are drawn, not only text
    assert ((pixels[..., 2] > 150) & (pixels[..., 0] < 80)).sum() > 100
    assert ((pixels[..., 0] > 180) & (pixels[..., 1] < 80)).sum() > 100


def test_nan_losses_leave_a_gap_in_the_plot_and_a_divergence_finding(runs, copy_run):
    run = copy_run(runs["ring8"])
    with open(run / "metrics.jsonl", "a") as f:
        for step, loss, skipped in ((25, float("nan"), 5), (30, 1.3, 5)):
            f.write(json.dumps({"step": step, "d_loss": loss, "g_loss": 0.7, "d_real": 0.5, "d_fake": 0.5, "seconds": 1.0,
                                "steps_per_s": 10.0, "skipped_steps": skipped}) + "\n")
    page = Page(write_report([run]).read_text(encoding="utf-8"))
    (losses,) = page.figures["losses"]
    assert losses["paths"]["d_loss"].count("M") == 2 and losses["paths"]["g_loss"].count("M") == 1
    assert "skipped_steps" in page.figures
    divergence = page.rows["divergence"]
    assert divergence["class"] == "past" and "seen at steps 25, gone by the end" in divergence["text"]
    assert "5 step(s) skipped for NaN/Inf; d_loss not finite" in divergence["text"]
