"""Diagnoses of the classic GAN failure modes, read from a run's metrics records.

A run's `metrics.jsonl` holds two kinds of record: log records
(`{"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds", "steps_per_s", "skipped_steps"}`,
every `log_every` steps) and evaluation records (`{"step", "seconds", "eval_seconds", "eval": {...}}`,
every `eval_every` steps). Each failure mode below is a pure function of those records that marks
every record where its signal holds; `diagnose` turns the marks into findings (present now, since
which step, seen earlier) for `ganforge report`, and `LiveDiagnosis` runs the same rules during
training and warns once per mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ganforge.evaluate import LOWER_IS_BETTER
from ganforge.losses import LOSSES

# Discriminator winning. With D(x) = sigmoid(logit), D(x) >= 0.9 and D(G(z)) <= 0.1 mean that D
# separates the batches with a logit margin of about 4.4: the minimax generator's gradient,
# proportional to D(G(z)), has all but vanished, and the non-saturating one is driven by a
# discriminator that no longer tells G where the data is.
D_REAL_HIGH = 0.9
D_FAKE_LOW = 0.1
# ... for this many log records in a row: a single interval of a confident D is common early on
# (the default digits and MNIST runs each have one, at step 200 and 100).
D_WINNING_RECORDS = 5

# Mode collapse. Variety metrics, larger is better: modes captured, classes the classifier sees,
# recall (the share of real data the samples reach) and coverage.
VARIETY_METRICS = ("modes", "classes_covered", "recall", "coverage")
# Variety lost: a variety metric falls below this fraction of the best value the run has shown.
VARIETY_DROP = 0.5
# 2D mixtures: samples whose spread (root-mean-square distance from their mean) is below this fraction
# of the real data's have collapsed to a point or a small blob, wherever it lies (on a mode or not).
COLLAPSED_SPREAD = 0.1
# ...and not growing by more than this factor since the last evaluation: a default ring8 run's EMA
# generator starts as a small blob (spread 0.06 at step 500) that grows (0.28 at step 1000).
SPREAD_GROWTH = 1.1
# Variety never there: samples look real (precision, or the share of high-quality samples on a
# 2D mixture, at least SHARP) but reach little of the data (recall at most NARROW, or a reverse KL
# to the uniform mode histogram of at least log 2: half the modes or more are missing).
SHARP_PRECISION, NARROW_RECALL = 0.5, 0.1
SHARP_HQ_PERCENT, MISSING_HALF_THE_MODES = 50.0, math.log(2)
# ... at this many evaluations in a row: a generator may not have spread out yet at one evaluation
# early on (a default MNIST run at step 500: precision 0.99, recall 0.0; recall 0.19 at step 1000).
COLLAPSE_EVALS = 2

# Failure to converge: the tracked metric (best_metric) has not improved on its best value for
# STALL_EVALS evaluations in a row, by a relative margin of STALL_MARGIN, while D's loss swings:
# its 10-90 % range over those evaluations' log records is at least OSCILLATION times its median
# size. A run that settles (constant losses) or still improves is not flagged. (The default runs'
# swings stay under 0.2; a ring8 run with 100 times the discriminator's learning rate swings by 5 to 18.)
STALL_EVALS = 3
STALL_MARGIN = 0.05
OSCILLATION = 0.5


@dataclass
class Marks:
    """A rule's verdict on each record it reads: (step, signal holds, evidence), in step order.

    `unmeasured` says why the rule cannot judge this run (then `points` is empty).
    """

    points: list[tuple[int, bool, str]] = field(default_factory=list)
    min_run: int = 1  # records in a row the signal must hold before it counts
    unmeasured: str | None = None


@dataclass
class Finding:
    """What a failure mode's rule says about a run."""

    mode: str  # key of FAILURE_MODES
    title: str
    present: bool  # the signal holds at the run's last judged record
    since: int | None  # the step at which the present episode began
    episodes: list[tuple[int, int]]  # (first step, last step) of every episode, the present one included
    evidence: str  # the numbers at the latest record of the latest episode
    advice: str
    unmeasured: str | None = None


def split_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(log records, evaluation records) of a metrics.jsonl, each in file order."""
    logs = [r for r in records if "eval" not in r and "d_loss" in r]
    evals = [r for r in records if isinstance(r.get("eval"), dict)]
    return logs, evals


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def discriminator_winning(logs: list[dict], evals: list[dict], config: dict) -> Marks:
    """D(x) >= D_REAL_HIGH and D(G(z)) <= D_FAKE_LOW for D_WINNING_RECORDS log records in a row."""
    loss = config.get("loss", "nonsaturating")
    if loss in LOSSES and not LOSSES[loss].probabilistic:
        return Marks(unmeasured=f"under loss={loss} D(x) is a critic score, not a probability")
    points = []
    for r in logs:
        real, fake = r.get("d_real"), r.get("d_fake")
        if _finite(real, fake):
            points.append((r["step"], real >= D_REAL_HIGH and fake <= D_FAKE_LOW, f"D(x) {real:.3f}, D(G(z)) {fake:.3f}"))
    return Marks(points, min_run=D_WINNING_RECORDS)


def _few_modes_sharp(scores: dict, previous_spread: float | None) -> str | None:
    """Evidence that samples look real but reach little of the data, or that they all lie in one small spot
    that is not growing (an early generator starts as a small blob and grows), or None."""
    spread = scores.get("spread")
    if _finite(spread) and spread < COLLAPSED_SPREAD and (previous_spread is None or spread <= previous_spread * SPREAD_GROWTH):
        return f"the samples spread {spread:.3f} as far as the real data (a point or a small blob), and not growing"
    hq, rkl = scores.get("hq_percent"), scores.get("reverse_kl")
    if _finite(hq, rkl) and hq >= SHARP_HQ_PERCENT and rkl >= MISSING_HALF_THE_MODES:
        return f"{hq:.1f} % high-quality samples on {scores.get('modes', '?')} mode(s), reverse KL {rkl:.3f}"
    precision, recall = scores.get("precision"), scores.get("recall")
    if _finite(precision, recall) and precision >= SHARP_PRECISION and recall <= NARROW_RECALL:
        return f"precision {precision:.3f} but recall {recall:.3f}"
    return None


def mode_collapse(logs: list[dict], evals: list[dict], config: dict) -> Marks:
    """A variety metric below VARIETY_DROP of its best so far, or sharp samples from few modes, at COLLAPSE_EVALS evaluations in a row."""
    if not evals:
        return Marks(unmeasured="no evaluation in this run: set eval_every to measure variety")
    best: dict[str, tuple[float, int]] = {}
    points, spread = [], None
    for r in evals:
        scores = r["eval"]
        evidence = _few_modes_sharp(scores, spread)
        spread = scores.get("spread")
        for name in VARIETY_METRICS:
            value = scores.get(name)
            if not _finite(value):
                continue
            if evidence is None and name in best and value < VARIETY_DROP * best[name][0]:
                evidence = f"{name} {value:.4g}, down from {best[name][0]:.4g} at step {best[name][1]}"
            if name not in best or value > best[name][0]:
                best[name] = (value, r["step"])
        points.append((r["step"], evidence is not None, evidence or ""))
    return Marks(points, min_run=COLLAPSE_EVALS)


def tracked_metric(evals: list[dict], config: dict) -> str | None:
    """The metric failure to converge follows: best_metric, when the evaluations report it."""
    name = config.get("best_metric")
    return name if evals and name in evals[0]["eval"] else None


def _swing(values: list[float]) -> float:
    """The 10-90 % range of `values` over their median size (0 for fewer than 3 values)."""
    if len(values) < 3:
        return 0.0
    ordered = sorted(values)
    low, high = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
    size = sorted(abs(v) for v in values)[len(values) // 2]
    return (high - low) / max(size, 1e-8)


def failure_to_converge(logs: list[dict], evals: list[dict], config: dict) -> Marks:
    """No improvement of best_metric for STALL_EVALS evaluations while D's loss swings by OSCILLATION."""
    metric = tracked_metric(evals, config)
    if metric is None:
        return Marks(unmeasured=f"needs evaluations of best_metric={config.get('best_metric')}: set eval_every")
    lower = metric in LOWER_IS_BETTER
    values = [r["eval"].get(metric) for r in evals]
    points = []
    for j, r in enumerate(evals):
        if j < STALL_EVALS or not all(_finite(v) for v in values[: j + 1]):
            points.append((r["step"], False, ""))
            continue
        before = values[: j - STALL_EVALS + 1]
        best_before = min(before) if lower else max(before)
        best_step = evals[before.index(best_before)]["step"]
        margin = STALL_MARGIN * abs(best_before)
        recent = values[j - STALL_EVALS + 1 : j + 1]
        improved = any((v < best_before - margin) if lower else (v > best_before + margin) for v in recent)
        start = evals[j - STALL_EVALS]["step"]
        losses = [x["d_loss"] for x in logs if start < x["step"] <= r["step"] and _finite(x.get("d_loss"))]
        swing = _swing(losses)
        evidence = (
            f"{metric} {values[j]:.4g}, not better than {best_before:.4g} (step {best_step}) for {STALL_EVALS} evaluations; "
            f"d_loss swings by {swing:.2f} of its size"
        )
        points.append((r["step"], not improved and swing >= OSCILLATION, evidence))
    return Marks(points)


def divergence(logs: list[dict], evals: list[dict], config: dict) -> Marks:
    """Steps skipped for NaN/Inf (skipped_steps grew), or a non-finite or missing loss in a log record."""
    points, skipped = [], 0
    for r in logs:
        now = r.get("skipped_steps") or 0
        bad = [k for k in ("d_loss", "g_loss") if not _finite(r.get(k))]
        evidence = f"{now - skipped} step(s) skipped for NaN/Inf" if now > skipped else ""
        if bad:
            evidence = "; ".join(filter(None, [evidence, f"{', '.join(bad)} not finite"]))
        points.append((r["step"], bool(evidence), evidence))
        skipped = max(skipped, now)
    return Marks(points)


def _advice_d_winning(config: dict) -> str:
    lr_d = config.get("lr_d")
    slower = f"lr_d={lr_d / 4:g} (a quarter of {lr_d:g})" if _finite(lr_d) else "a lower lr_d"
    fewer = ", d_steps_per_g_step=1" if (config.get("d_steps_per_g_step") or 1) > 1 else ""
    return f"{slower}{fewer}, an R1 penalty (r1_gamma=1) or d_norm=spectral; with loss=minimax, loss=nonsaturating"


def _advice_collapse(config: dict) -> str:
    mbstd = "d_mbstd=4 (minibatch standard deviation), " if config.get("arch") == "conv" else ""
    return f"{mbstd}pack=2 (PacGAN), an R1 penalty (r1_gamma=1), lower learning rates (lr_g, lr_d), or ema_decay=0.999"


def _advice_converge(config: dict) -> str:
    return "lower learning rates (lr_g, lr_d), lr_decay=0.3 (both fall to 0 over the last 30 %), beta1=0.0 or 0.5, ema_decay=0.999, or r1_gamma=1"


def _advice_divergence(config: dict) -> str:
    return (
        "lower learning rates (lr_g, lr_d), a penalty (r1_gamma=1 or gp_weight=10), precision=fp32, "
        "or on_divergence=rollback to restart from the last checkpoint"
    )


@dataclass(frozen=True)
class FailureMode:
    title: str
    rule: Callable[[list[dict], list[dict], dict], Marks]
    advice: Callable[[dict], str]
    reads_evals: bool  # the rule reads evaluation records (else log records)


FAILURE_MODES = {
    "discriminator_winning": FailureMode("discriminator winning (vanishing generator gradient)", discriminator_winning, _advice_d_winning, False),
    "mode_collapse": FailureMode("mode collapse (variety lost)", mode_collapse, _advice_collapse, True),
    "failure_to_converge": FailureMode("failure to converge (losses oscillate, the metric does not improve)", failure_to_converge, _advice_converge, True),
    "divergence": FailureMode("divergence (NaN/Inf, skipped steps)", divergence, _advice_divergence, False),
}


def _episodes(marks: Marks) -> list[tuple[int, int, str]]:
    """(first step, last step, evidence at the last step) of each run of at least `min_run` marked records."""
    episodes, run = [], []
    for point in [*marks.points, (None, False, "")]:
        if point[1]:
            run.append(point)
            continue
        if len(run) >= marks.min_run:
            episodes.append((run[0][0], run[-1][0], run[-1][2]))
        run = []
    return episodes


def finding(mode: str, logs: list[dict], evals: list[dict], config: dict) -> Finding:
    """The finding of one failure mode (a key of FAILURE_MODES) on a run's records."""
    failure = FAILURE_MODES[mode]
    marks = failure.rule(logs, evals, config)
    episodes = _episodes(marks)
    present = bool(episodes) and episodes[-1][1] == marks.points[-1][0]
    return Finding(
        mode=mode, title=failure.title, present=present, since=episodes[-1][0] if present else None,
        episodes=[(first, last) for first, last, _ in episodes], evidence=episodes[-1][2] if episodes else "",
        advice=failure.advice(config), unmeasured=marks.unmeasured,
    )


def diagnose(records: list[dict], config: dict) -> list[Finding]:
    """One finding per failure mode, in FAILURE_MODES order, for a run's metrics records and config (a dict)."""
    logs, evals = split_records(records)
    return [finding(mode, logs, evals, config) for mode in FAILURE_MODES]


class LiveDiagnosis:
    """The same rules during training: `update` with each record written, get the new warnings.

    Each failure mode is warned once, when its signal is first present. A record whose step is
    not after the previous one (a rollback rewrote the history) drops the records it replaces.
    With the divergence guard off (max_nonfinite_steps=0) divergence is left to the loop, whose
    next save refuses NaN weights with its own error line.
    """

    def __init__(self, config: dict) -> None:
        self.config = config
        self.logs: list[dict] = []
        self.evals: list[dict] = []
        self.warned: set[str] = set() if config.get("max_nonfinite_steps", 1) else {"divergence"}

    def update(self, record: dict) -> list[str]:
        """Adds one metrics record; returns a warning line for each failure mode that has just appeared."""
        is_eval = isinstance(record.get("eval"), dict)
        for history in (self.logs, self.evals):
            own = history is (self.evals if is_eval else self.logs)
            while history and (history[-1]["step"] >= record["step"] if own else history[-1]["step"] > record["step"]):
                history.pop()
        (self.evals if is_eval else self.logs).append(record)
        lines = []
        for mode, failure in FAILURE_MODES.items():
            if mode in self.warned or failure.reads_evals != is_eval:
                continue
            found = finding(mode, self.logs, self.evals, self.config)
            if found.present:
                self.warned.add(mode)
                lines.append(f"{found.title} since step {found.since}: {found.evidence}; try {found.advice}")
        return lines
