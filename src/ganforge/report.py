"""`ganforge report`: a run's training story as one self-contained HTML page.

The page needs nothing but itself: plots are inline SVG drawn here, sample grids are inline
base64 PNGs, the style sheet is inline, and there is no script. It shows the losses, D(x) and
D(G(z)), every evaluation metric against steps and against training time, the sample grids as
a timeline, the config, and the diagnoses of `diagnose.py`. Several runs share the same plots.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ganforge.checkpoint import atomic_write
from ganforge.diagnose import Finding, diagnose, split_records
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES

REPORT, COMPARE = "report.html", "compare.html"
MAX_PICTURES = 12  # sample grids shown per run, spread evenly over the run (the first and the last always)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
WIDTH, HEIGHT = 560, 260  # one plot, in SVG units (pixels at 100 % zoom)
LEFT, RIGHT, TOP, BOTTOM = 64, 14, 12, 40  # margins around the plot area
MARKERS_UP_TO = 60  # series with at most this many points also get a dot per point


@dataclass
class Run:
    """What a run folder holds that the report shows."""

    name: str
    path: Path
    config: dict
    logs: list[dict]
    evals: list[dict]
    findings: list[Finding]
    pictures: list[tuple[str, Path]]  # (label, PNG file), in training order
    unreadable_lines: int


def _read_records(path: Path) -> tuple[list[dict], int]:
    """The JSON records of metrics.jsonl and the number of lines that were not one (e.g. cut short by a crash)."""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif line.strip():
            bad += 1
    return records, bad


def _pictures(run_dir: Path) -> list[tuple[str, Path]]:
    """The sample grids in training order, thinned to MAX_PICTURES spread evenly (first and last kept)."""
    steps = sorted(run_dir.glob("samples/step_*.png"))
    found = [(f"step {int(p.stem.split('_')[1]):,}", p) for p in steps if p.stem.split("_")[1].isdigit()]
    if (run_dir / "samples" / "final.png").is_file():
        found.append(("final", run_dir / "samples" / "final.png"))
    if len(found) <= MAX_PICTURES:
        return found
    picks = sorted({round(i * (len(found) - 1) / (MAX_PICTURES - 1)) for i in range(MAX_PICTURES)})
    return [found[i] for i in picks]


def load_run(run_dir: str | Path) -> Run:
    """Reads a run folder written by `ganforge train`; GanforgeError when it is not one."""
    path = Path(run_dir)
    config_file, metrics_file = path / "config.json", path / "metrics.jsonl"
    if not path.is_dir() or not config_file.is_file() or not metrics_file.is_file():
        raise GanforgeError(f"'{path}' is not a run folder: expected a folder with config.json and metrics.jsonl written by 'ganforge train'")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GanforgeError(f"{config_file} is not valid JSON: expected the config.json written by 'ganforge train'") from None
    if not isinstance(config, dict):
        raise GanforgeError(f"{config_file} holds no mapping: expected the config.json written by 'ganforge train'")
    records, bad = _read_records(metrics_file)
    logs, evals = split_records(records)
    name = path.resolve().name
    return Run(name, path, config, logs, evals, diagnose(records, config), _pictures(path), bad)


def report_path(run_dirs: list[str | Path], out: str | Path | None) -> Path:
    """Where the page goes: `out`, else RUN/report.html for one run and FIRST_RUN/compare.html for several."""
    if out is not None:
        return Path(out)
    return Path(run_dirs[0]) / (REPORT if len(run_dirs) == 1 else COMPARE)


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Writes the report of one run, or the comparison of several, and returns the page's path."""
    if not run_dirs:
        raise GanforgeError("no run folder given: expected one or more folders written by 'ganforge train'")
    target = report_path(run_dirs, out)
    if target.is_dir():
        raise GanforgeError(f"--out {target} is a folder: expected a file name such as {target / REPORT}")
    runs = [load_run(d) for d in run_dirs]
    page = render(runs).encode("utf-8")
    atomic_write(target, lambda f: f.write(page))
    return target


# Plots -----------------------------------------------------------------------------------------


@dataclass
class Series:
    """One line of a plot: its legend label, colour, dash pattern and (x, y) points (y None: a gap)."""

    label: str
    color: str
    points: list[tuple[float, float | None]]
    dash: str = ""


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = high - low
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.6g}"


def _axes(xs: tuple[float, float], ys: tuple[float, float], x_label: str, y_label: str, to_px) -> list[str]:
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" class="frame"/>']
    for tick in nice_ticks(*ys):
        _, py = to_px(xs[0], tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{_tick_label(tick)}</text>')
    for tick in nice_ticks(*xs):
        px, _ = to_px(tick, ys[0])
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="grid"/>')
        parts.append(f'<text x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_tick_label(tick)}</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" class="label">{html.escape(x_label)}</text>')
    parts.append(
        f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" class="label">{html.escape(y_label)}</text>'
    )
    return parts


def _series_svg(series: Series, to_px) -> list[str]:
    """A series as one path (a gap where y is missing or not finite), plus dots when it has few points."""
    commands, pen_down, dots = [], False, []
    for x, y in series.points:
        if not (_finite(x) and _finite(y)):
            pen_down = False
            continue
        px, py = to_px(x, y)
        commands.append(f"{'L' if pen_down else 'M'}{px:.2f},{py:.2f}")
        pen_down = True
        dots.append((px, py))
    label = html.escape(series.label, quote=True)
    dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
    parts = [f'<path data-series="{label}" d="{" ".join(commands)}" stroke="{series.color}"{dash} class="line"/>']
    if len(dots) <= MARKERS_UP_TO:
        parts += [f'<circle cx="{px:.2f}" cy="{py:.2f}" r="2.5" fill="{series.color}"/>' for px, py in dots]
    return parts


def line_plot(series: list[Series], x_label: str, y_label: str) -> str:
    """An inline SVG line plot of `series` on shared linear axes.

    The SVG carries its data ranges (`data-x`, `data-y`: low high) and plot box (`data-box`:
    left top width height, in SVG units), so a reader can map every point back to its value.
    """
    xs = [x for s in series for x, y in s.points if _finite(x) and _finite(y)]
    ys = [y for s in series for x, y in s.points if _finite(x) and _finite(y)]
    if not xs:
        return '<p class="empty">no finite values to plot</p>'
    x_range, y_range = _range(xs), _range(ys)
    box = (LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (box[0] + (x - x_range[0]) / (x_range[1] - x_range[0]) * box[2],
                box[1] + (y_range[1] - y) / (y_range[1] - y_range[0]) * box[3])

    body = _axes(x_range, y_range, x_label, y_label, to_px)
    for s in series:
        body += _series_svg(s, to_px)
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'data-x="{x_range[0]!r} {x_range[1]!r}" data-y="{y_range[0]!r} {y_range[1]!r}" data-box="{" ".join(map(str, box))}">'
        + "".join(body) + "</svg>"
    )


def _legend(series: list[Series]) -> str:
    items = [
        f'<span class="key"><svg width="26" height="10"><line x1="0" x2="26" y1="5" y2="5" stroke="{s.color}" stroke-width="2.5"'
        f'{f" stroke-dasharray={chr(34)}{s.dash}{chr(34)}" if s.dash else ""}/></svg>{html.escape(s.label)}</span>'
        for s in series
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def figure(name: str, caption: str, plots: list[str], series: list[Series]) -> str:
    """A <figure> holding one or more plots that share a legend; `name` is its data-metric attribute."""
    return (
        f'<figure data-metric="{html.escape(name, quote=True)}"><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="plots">{"".join(plots)}</div>{_legend(series)}</figure>'
    )


def _styles(runs: list[Run], count: int) -> list[tuple[str, str]]:
    """(colour, dash) of each of `count` series per run: one colour per series for one run, one per run for several."""
    dashes = ("", "6 3", "2 3", "8 3 2 3")
    if len(runs) == 1:
        return [(PALETTE[i % len(PALETTE)], "") for i in range(count)]
    return [(PALETTE[r % len(PALETTE)], dashes[i % len(dashes)]) for r in range(len(runs)) for i in range(count)]


def _log_series(runs: list[Run], keys: list[tuple[str, str]]) -> list[Series]:
    """One series per run and log-record key (key, legend label), against the step."""
    styles = iter(_styles(runs, len(keys)))
    result = []
    for run in runs:
        for key, label in keys:
            color, dash = next(styles)
            name = label if len(runs) == 1 else f"{run.name}: {label}"
            result.append(Series(name, color, [(r["step"], r.get(key)) for r in run.logs], dash))
    return result


def _eval_series(runs: list[Run], metric: str, x: str) -> list[Series]:
    """One series per run that reports `metric`, against `x` (step or seconds); each run keeps its colour."""
    result = []
    for run, (color, dash) in zip(runs, _styles(runs, 1)):
        points = [(r.get(x), r["eval"].get(metric)) for r in run.evals]
        if any(_finite(y) for _, y in points):
            result.append(Series(metric if len(runs) == 1 else run.name, color, points, dash))
    return result


def _score_label(runs: list[Run]) -> str:
    probabilistic = all(LOSSES.get(run.config.get("loss"), LOSSES["nonsaturating"]).probabilistic for run in runs)
    return "probability" if probabilistic else "score (critic output for wasserstein, hinge and least_squares)"


def training_figures(runs: list[Run]) -> str:
    """The losses, D(x) and D(G(z)), and the speed, against the step."""
    figures = []
    for name, caption, keys, y_label in (
        ("losses", "Losses of the discriminator and the generator", [("d_loss", "d_loss"), ("g_loss", "g_loss")], "loss"),
        ("d_outputs", "D(x) on real batches and D(G(z)) on generated ones", [("d_real", "D(x)"), ("d_fake", "D(G(z))")], _score_label(runs)),
        ("steps_per_s", "Training speed", [("steps_per_s", "steps/s")], "steps per second"),
    ):
        series = _log_series(runs, keys)
        figures.append(figure(name, caption, [line_plot(series, "step", y_label)], series))
    skipped = _log_series(runs, [("skipped_steps", "skipped steps")])
    if any(_finite(y) and y > 0 for s in skipped for _, y in s.points):
        figures.append(figure("skipped_steps", "Steps skipped for NaN/Inf (running total)", [line_plot(skipped, "step", "steps")], skipped))
    adaptive = _log_series(runs, [("augment_p", "augmentation probability")])
    if any(_finite(y) for s in adaptive for _, y in s.points):
        caption = "The adaptive augmentation probability (ADA): it rises while D separates real from generated images too surely"
        figures.append(figure("augment_p", caption, [line_plot(adaptive, "step", "probability")], adaptive))
    return f'<div class="figures">{"".join(figures)}</div>'


def eval_metrics(runs: list[Run]) -> list[str]:
    """Every evaluation metric the runs report, in the order they first appear."""
    names: dict[str, None] = {}
    for run in runs:
        for record in run.evals:
            names.update((k, None) for k, v in record["eval"].items() if _finite(v))
    return list(names)


def eval_figures(runs: list[Run]) -> str:
    """One figure per evaluation metric: against the step and against the training time."""
    metrics = eval_metrics(runs)
    if not metrics:
        return '<p class="empty">No evaluation in this run: train with eval_every=N to score the generator every N steps.</p>'
    figures = []
    for metric in metrics:
        by_step, by_time = _eval_series(runs, metric, "step"), _eval_series(runs, metric, "seconds")
        plots = [line_plot(by_step, "step", metric), line_plot(by_time, "training time (s, evaluation excluded)", metric)]
        figures.append(figure(metric, f"{metric} against steps and against training time", plots, by_step))
    return "".join(figures)


def _status(found: Finding) -> tuple[str, str]:
    """(CSS class, words) of a finding's state."""
    if found.unmeasured:
        return "unmeasured", f"not measured: {found.unmeasured}"
    if found.present:
        return "present", f"present since step {found.since:,}"
    if found.episodes:
        seen = ", ".join(f"{a:,}" if a == b else f"{a:,}-{b:,}" for a, b in found.episodes)
        return "past", f"seen at steps {seen}, gone by the end"
    return "absent", "not seen"


def diagnosis_section(run: Run) -> str:
    """A table of the run's findings: each failure mode, its state, the evidence and what to try."""
    rows = []
    for found in run.findings:
        kind, words = _status(found)
        advice = html.escape(found.advice) if kind in ("present", "past") else ""
        rows.append(
            f'<tr class="{kind}" data-mode="{found.mode}"><th>{html.escape(found.title)}</th><td>{html.escape(words)}</td>'
            f"<td>{html.escape(found.evidence)}</td><td>{advice}</td></tr>"
        )
    present = [f.title for f in run.findings if f.present]
    verdict = f"Failure signals present: {', '.join(present)}." if present else "No failure signal present at the end of the run."
    return (
        f'<div class="diagnosis" data-run="{html.escape(run.name, quote=True)}"><h3>{html.escape(run.name)}</h3><p>{html.escape(verdict)}</p>'
        "<table><tr><th>failure mode</th><th>state</th><th>evidence (latest)</th><th>what to try (config keys)</th></tr>"
        + "".join(rows) + "</table></div>"
    )


def timeline(run: Run) -> str:
    """The run's sample grids in training order, inline as base64 PNGs."""
    if not run.pictures:
        return f'<p class="empty">{html.escape(run.name)}: no sample grids (samples/*.png) in this run.</p>'
    cells = []
    for label, path in run.pictures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        cells.append(
            f'<figure class="sample"><img alt="{html.escape(label)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(label)}</figcaption></figure>"
        )
    name = html.escape(run.name, quote=True)
    return f'<div class="timeline" data-run="{name}"><h3>{name}</h3><div class="strip">{"".join(cells)}</div></div>'


def config_table(runs: list[Run]) -> str:
    """The runs' configs side by side; keys whose values differ between runs are marked."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    head = "".join(f"<th>{html.escape(run.name)}</th>" for run in runs)
    rows = []
    for key in keys:
        values = [json.dumps(run.config.get(key)) for run in runs]
        differs = ' class="differs"' if len(set(values)) > 1 else ""
        rows.append(f"<tr{differs}><th>{html.escape(key)}</th>{''.join(f'<td>{html.escape(v)}</td>' for v in values)}</tr>")
    return f'<table class="config"><tr><th>key</th>{head}</tr>{"".join(rows)}</table>'


def _last(records: list[dict], key: str):
    return next((r[key] for r in reversed(records) if _finite(r.get(key))), None)


def summary(run: Run) -> str:
    """One table row: where the run stands."""
    step = max([r["step"] for r in run.logs + run.evals], default=0)
    seconds = _last(run.logs + run.evals, "seconds")
    metric = run.config.get("best_metric")
    values = [r["eval"][metric] for r in run.evals if _finite(r["eval"].get(metric))]
    latest = f"{metric} {values[-1]:.4g}" if values else "not evaluated"
    cells = [run.name, str(run.config.get("data")), f"{step:,} of {run.config.get('steps') or 0:,}",
             f"{seconds:,.0f} s" if seconds is not None else "-", latest, str(run.path.resolve())]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; margin-top: 32px; } h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
tr.present { background: #fde2e1; } tr.past { background: #fff4d6; } tr.absent td:nth-child(2) { color: #2a7a2a; } tr.unmeasured { color: #777; }
tr.differs { background: #fff4d6; }
figure { margin: 16px 0; } .figures { display: flex; flex-wrap: wrap; column-gap: 24px; } figcaption { font-weight: 600; margin-bottom: 4px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
svg.plot { background: #fff; font-size: 11px; } svg.plot text { fill: #444; } svg.plot .label { font-size: 12px; fill: #222; }
svg.plot .frame { fill: none; stroke: #999; } svg.plot .grid { stroke: #eee; } svg.plot .line { fill: none; stroke-width: 1.6; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin-top: 4px; } .key svg { vertical-align: middle; margin-right: 4px; }
.strip { display: flex; gap: 10px; overflow-x: auto; padding-bottom: 6px; }
figure.sample { margin: 0; text-align: center; } figure.sample img { height: 240px; image-rendering: pixelated; border: 1px solid #ddd; }
figure.sample figcaption { font-weight: normal; }
.empty, .note { color: #777; }
"""


def _notes(runs: list[Run]) -> str:
    notes = [f"{run.name}: {run.unreadable_lines} line(s) of metrics.jsonl were not JSON records and are left out."
             for run in runs if run.unreadable_lines]
    return "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)


def render(runs: list[Run]) -> str:
    """The whole page for one run, or several on shared plots."""
    title = f"ganforge report: {runs[0].name}" if len(runs) == 1 else "ganforge comparison: " + ", ".join(r.name for r in runs)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<table><tr><th>run</th><th>data</th><th>steps</th><th>training time</th><th>latest best_metric</th><th>folder</th></tr>"
        + "".join(summary(run) for run in runs) + "</table>" + _notes(runs),
        '<h2 id="diagnosis">Diagnosis</h2><p>Each known failure mode, whether its signal is present, since when, and what to try. '
        "The same rules warn during training.</p>" + "".join(diagnosis_section(run) for run in runs),
        '<h2 id="training">Training</h2>' + training_figures(runs),
        '<h2 id="evaluation">Evaluation</h2>' + eval_figures(runs),
        '<h2 id="samples">Samples over training</h2>' + "".join(timeline(run) for run in runs),
        '<h2 id="config">Config</h2>' + config_table(runs),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
