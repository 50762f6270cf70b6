"""Evaluation of a generator against real data: which metrics for which data, real-data caching, the run's eval files.

`evaluate(generator, real)` is the one entry point for the command line (`ganforge eval`),
scripts and a training loop: it draws samples, extracts features, computes the metrics and
returns one flat dict of numbers. `evaluate_run(run_dir)` adds what a run folder knows (its
config, exported generator and reference data) and writes `eval.json` (latest) and
`eval.jsonl` (history).

Defaults by kind of data (`domain`):
- 2D mixtures: mode statistics (PacGAN protocol, 2,500 samples);
- digits / MNIST: Fréchet distance, KID, precision/recall, density/coverage in the shipped
  classifier's features (`digits8` / `mnist28`) and class statistics, as many samples as
  the reference has (at most 10,000; MNIST's reference is its 10,000 test images);
- Stacked MNIST: modes and KL over the 1,000 digit triples (26,000 samples);
- other images: the same feature metrics in Inception-v3 features when `ganforge[inception]`
  (or torch-fidelity and its weights) is there, else in downsampled pixels with a note saying so;
- other vectors: the feature metrics on the vectors themselves;
- tables: quality (column shapes and pair trends), ML efficacy on `test_data` for `target`, and the
  privacy check (`metrics/tabular.py`), on as many rows as the training table has (at most 10,000).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ganforge.config import MAXIMA, MIN_EVAL_SAMPLES
from ganforge.data.dataset import Dataset
from ganforge.data.images import load_mnist
from ganforge.data.load import load_dataset
from ganforge.data.spec import parse_spec
from ganforge.data.table import check_target, read_held_out, table_options
from ganforge.errors import GanforgeError, cut
from ganforge.features import CLASSIFIERS, DigitClassifier, Extracted, PixelFeatures, extract, inception_features, load_classifier
from ganforge.limits import check_count
from ganforge.metrics import (
    class_histogram,
    class_stats,
    density_coverage,
    frechet_distance,
    kernel_inception_distance,
    mixture_mode_stats,
    precision_recall,
    stacked_mnist_mode_stats,
)

FEATURE_METRICS = ("fd", "kid", "precision_recall", "density_coverage")
METRICS = (*FEATURE_METRICS, "classes", "modes")
FEATURES = ("auto", *CLASSIFIERS, "inception", "pixels", "raw")
MAX_REFERENCE = 10_000  # real samples used at most (a seeded subset of larger datasets)
MIXTURE_SAMPLES, STACKED_SAMPLES = 2_500, 26_000  # the PacGAN protocol's sample counts
EVAL_JSON, EVAL_HISTORY = "eval.json", "eval.jsonl"
# Metrics where a smaller value is a better generator; for every other metric larger is better.
TABLE_METRICS = ("quality", "column_shapes", "column_pairs", "ml_efficacy")
LOWER_IS_BETTER = frozenset({"fd", "kid_mean", "class_kl", "reverse_kl", "kl"})


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing yet), e.g. to keep a best checkpoint."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def domain(dataset: Dataset) -> str:
    """The kind of data, which picks default metrics: mixture, digits, mnist, stackedmnist, images or vectors."""
    if dataset.modes is not None:
        return "mixture"
    source = parse_spec(dataset.name).source
    return source if source in ("digits", "mnist", "stackedmnist") else dataset.kind


def default_metrics(kind: str) -> tuple[str, ...]:
    """The metrics `evaluate` computes for a domain when none are named."""
    if kind == "mixture":
        return ("modes",)
    if kind == "stackedmnist":
        return ("modes",)
    if kind in ("digits", "mnist"):
        return (*FEATURE_METRICS, "classes")
    return FEATURE_METRICS


def reported_metrics(kind: str) -> tuple[str, ...]:
    """The names of the numbers `evaluate` reports by default for a domain (e.g. fd, kid_mean, reverse_kl)."""
    if kind == "table":
        return TABLE_METRICS
    names = {
        "fd": ("fd",), "kid": ("kid_mean", "kid_std"), "precision_recall": ("precision", "recall"),
        "density_coverage": ("density", "coverage"), "classes": ("classes_covered", "class_kl", "classifier_score"),
        "modes": ("modes", "hq_percent", "reverse_kl", "spread") if kind == "mixture" else ("modes", "kl"),
    }
    return tuple(name for metric in default_metrics(kind) for name in names[metric])


@dataclass
class Extractor:
    """A feature extractor and the name its cached real-data features are filed under."""

    name: str
    module: nn.Module | None  # None: the samples themselves (vectors) are the features
    notes: list[str] = field(default_factory=list)
    # Vectors: the real data's affine transform; features are (x - shift) / scale, so every
    # column counts alike and distances read in standard deviations, not in the data's units.
    transform: dict | None = None
    progress: bool = False  # a progress bar on stderr for a slow extraction (`ganforge eval`)

    def __call__(self, samples: Tensor, what: str = "images") -> Extracted:
        if self.module is None:
            features = samples.reshape(len(samples), -1).double().cpu()
            if self.transform is not None:
                shift = torch.as_tensor(self.transform["shift"], dtype=torch.float64)
                features = (features - shift) / torch.as_tensor(self.transform["scale"], dtype=torch.float64)
            return Extracted(features=features.numpy())
        return extract(self.module, samples, progress=f"{self.name} features of {what}" if self.progress else None)


def pick_extractor(features: str | nn.Module, kind: str, device: torch.device | str = "cpu") -> Extractor:
    """The extractor named by `features` ("auto" picks by domain), or a user module (images in [0, 1] -> (n, d))."""
    if isinstance(features, nn.Module):
        name = getattr(features, "fingerprint", None) or f"{type(features).__name__}-{_module_hash(features)}"
        return Extractor(name, features.to(device).eval())
    if features not in FEATURES:
        raise GanforgeError(f"--features {features!r} is unknown: expected one of {', '.join(FEATURES)}")
    if features == "auto":
        features = {"digits": "digits8", "mnist": "mnist28", "stackedmnist": "mnist28", "images": "inception"}.get(kind, "raw")
        if features == "inception":
            try:
                return pick_extractor("inception", kind, device)
            except GanforgeError as err:
                extractor = pick_extractor("pixels", kind, device)
                extractor.notes.append(f"Inception FID unavailable, metrics in 16x16 pixel features instead: {err}")
                return extractor
    if features == "raw" and kind not in ("vectors", "mixture"):
        raise GanforgeError("--features raw applies to vector data: for images use digits8, mnist28, mnist28b, inception or pixels")
    if features != "raw" and kind in ("vectors", "mixture"):
        raise GanforgeError(f"--features {features} needs image data, but this run generates vectors: use raw")
    if features == "raw":
        return Extractor("raw", None)
    if features in CLASSIFIERS:
        module = load_classifier(features)
    elif features == "inception":
        module = inception_features()
    else:
        module = PixelFeatures(16)
    return Extractor(module.fingerprint, module.to(device).eval())


def _module_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def as_samples(dataset: Dataset) -> Tensor:
    """A dataset's samples in data space: images as float (n, c, h, w) in [0, 1], vectors as float (n, d)."""
    if dataset.kind == "images":
        return dataset.samples.float() / 255.0
    return dataset.samples.float()


def cache_dir() -> Path:
    """Where real-data features are cached: $GANFORGE_CACHE, else ~/.cache/ganforge/eval."""
    return Path(os.environ.get("GANFORGE_CACHE") or Path.home() / ".cache" / "ganforge" / "eval")


def real_features(real: Dataset, extractor: Extractor, n: int, seed: int, cache: Path | None) -> Extracted:
    """Features of `n` real samples (a seeded subset when the dataset is larger), cached on disk.

    The cache key hashes the dataset's name and bytes, `n`, `seed` and the extractor's name
    (which includes a hash of its weights), so changed data or weights never reuse a file.
    """
    samples = real.samples
    digest = hashlib.sha256()
    for part in (real.name, str(tuple(samples.shape)), str(n), str(seed), extractor.name, json.dumps(extractor.transform)):
        digest.update(part.encode() + b"\0")
    digest.update(samples.cpu().contiguous().numpy().tobytes())
    path = cache / f"{digest.hexdigest()[:24]}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as stored:
                return Extracted(stored["features"], stored["probabilities"] if "probabilities" in stored.files else None)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed and replaced
    extracted = extractor(as_samples(_subset(real, n, seed)), "real images")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"features": extracted.features}
        if extracted.probabilities is not None:
            arrays["probabilities"] = extracted.probabilities
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, path)  # concurrent evaluations never read half a file
    return extracted


def _subset(real: Dataset, n: int, seed: int) -> Dataset:
    if n >= len(real):
        return real
    index = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(real), n, replace=False)))
    return Dataset(real.name, real.kind, real.samples[index], real.transform, None if real.labels is None else real.labels[index])


def _feature_metrics(names: tuple[str, ...], real: Extracted, fake: Extracted, seed: int) -> dict:
    result: dict = {}
    if "fd" in names:
        result["fd"] = frechet_distance(real.features, fake.features)
    if "kid" in names:
        result.update(kernel_inception_distance(real.features, fake.features, seed=seed))
    if "precision_recall" in names:
        result.update(precision_recall(real.features, fake.features, k=3))
    if "density_coverage" in names:
        result.update(density_coverage(real.features, fake.features, k=5))
    if "classes" in names:
        if real.probabilities is None or fake.probabilities is None:
            raise GanforgeError("metric 'classes' needs a classifier as feature extractor: use --features digits8, mnist28 or mnist28b")
        reference = class_histogram(real.probabilities.argmax(axis=1), real.probabilities.shape[1])
        result.update(class_stats(fake.probabilities, reference))
    return result


def stacked_digits(images: Tensor, classifier: nn.Module) -> np.ndarray:
    """The digit the classifier reads in each channel of (n, 3, h, w) images in [0, 1] -> (n, 3) ints."""
    if not isinstance(classifier, DigitClassifier) or images.dim() != 4 or images.shape[1] != 3:
        raise GanforgeError("Stacked MNIST modes need 3-channel images and a digit classifier (--features mnist28 or mnist28b)")
    n, _, h, w = images.shape
    probabilities = extract(classifier, images.reshape(n * 3, 1, h, w)).probabilities  # channels as grey images
    return probabilities.argmax(axis=1).reshape(n, 3)


def _mode_metrics(samples: Tensor, real: Dataset, kind: str, extractor: Extractor) -> dict:
    if kind == "mixture":
        return mixture_mode_stats(samples, real.modes, real.mode_std)
    if kind == "stackedmnist":
        return stacked_mnist_mode_stats(stacked_digits(samples, extractor.module))
    raise GanforgeError(f"metric 'modes' applies to the 2D mixtures and Stacked MNIST, not to {real.name}")


def evaluate_samples(
    samples: Tensor, real: Dataset, *, metrics: tuple[str, ...] | None = None, features: str | nn.Module = "auto",
    n_real: int | None = None, seed: int = 0, real_baseline: bool = False, cache: Path | None = None,
    device: torch.device | str = "cpu", labels: Tensor | None = None, progress: bool = False,
) -> dict:
    """Metrics of generated `samples` (data space, as `SampleableGenerator.sample` returns) against `real`.

    Args:
        samples: images (n, c, h, w) float in [0, 1] or vectors (n, d) in data units.
        real: the reference dataset (see `reference_dataset`).
        metrics: names from METRICS (default: `default_metrics(domain(real))`).
        features: a name from FEATURES or an nn.Module mapping images in [0, 1] to (n, d).
        n_real: real samples to compare against (default: all, at most 10,000).
        seed: seeds the real subset, KID's subsets and the real-baseline split.
        real_baseline: also compute each metric between two halves of the real samples, and the
            generator's at that same sample count ("generator" in "real_baseline").
        cache: folder for real-data features (None: no caching).
        labels: the class each sample was asked for (a conditional generator); with a classifier as
            features, "class_accuracy" is how often the classifier reads that class.
        progress: show a progress bar on stderr (a terminal) while a slow extraction runs.

    Returns:
        {"metrics": {name: float or int}, "features": extractor name, "n": generated samples,
        "n_real": real samples compared against (None for mode statistics only), "notes": [str], and "real_baseline": {...} when asked}.
    """
    kind = domain(real)
    names = tuple(metrics) if metrics else default_metrics(kind)
    for name in names:
        if name not in METRICS:
            raise GanforgeError(f"metric {name!r} is unknown: expected one or more of {', '.join(METRICS)}")
    extractor = pick_extractor(features, kind, device)
    extractor.progress = progress
    if extractor.module is None and kind == "vectors" and real.transform.get("kind") == "affine":
        extractor.transform = real.transform
        extractor.notes.append("vectors compared in standardised units: each column of the real data has mean 0 and std 1")
    feature_names = tuple(m for m in names if m != "modes")
    # Mode statistics need no real samples (their reference is the modes): n_real is None then.
    n_real = min(n_real or MAX_REFERENCE, len(real)) if feature_names else None
    result: dict = {"features": extractor.name, "n": len(samples), "n_real": n_real, "notes": list(extractor.notes), "metrics": {}}
    real_extracted = real_features(real, extractor, n_real, seed, cache) if feature_names else None
    fake_extracted = extractor(samples, "generated images") if feature_names else None
    if feature_names:
        result["metrics"].update(_feature_metrics(feature_names, real_extracted, fake_extracted, seed))
    if labels is not None and fake_extracted is not None and fake_extracted.probabilities is not None:
        read = fake_extracted.probabilities.argmax(axis=1)
        result["metrics"]["class_accuracy"] = float((read == labels.cpu().numpy()).mean())
    if "modes" in names:
        result["metrics"].update(_mode_metrics(samples, real, kind, extractor))
    if real_baseline:
        result["real_baseline"] = _real_baseline(names, real, real_extracted, fake_extracted, kind, extractor, len(samples), seed)
    return result


def _real_baseline(
    names, real: Dataset, real_extracted: Extracted | None, fake_extracted: Extracted | None, kind: str, extractor: Extractor,
    n: int, seed: int,
) -> dict:
    """Each metric between two disjoint random halves of the real data: what a perfect generator would score.

    A Fréchet distance computed on fewer samples is larger (its bias grows as n shrinks), so
    the generator is also scored at the baseline's count, "generator": its first `n` samples
    (all of them when fewer) against the same real half. The two then compare as one measurement
    (a generator can still score below it when the reference is its own training data, as for digits).
    """
    baseline: dict = {}
    if real_extracted is not None:
        order = np.random.default_rng(seed + 1).permutation(len(real_extracted.features))
        half = len(order) // 2
        if half < 6:
            raise GanforgeError(f"--real-baseline needs at least 12 real samples, the reference has {len(order)}")

        def part(extracted: Extracted, index: np.ndarray) -> Extracted:
            probabilities = extracted.probabilities
            return Extracted(extracted.features[index], None if probabilities is None else probabilities[index])

        feature_names = tuple(m for m in names if m != "modes")
        reference = part(real_extracted, order[:half])
        baseline.update(_feature_metrics(feature_names, reference, part(real_extracted, order[half : 2 * half]), seed))
        baseline["n"] = half
        count = min(half, len(fake_extracted.features))
        baseline["generator"] = _feature_metrics(feature_names, reference, part(fake_extracted, np.arange(count)), seed)
    if "modes" in names:
        # As many real samples as generated ones were scored, for counts that compare.
        count = min(n, len(real))
        index = torch.from_numpy(np.random.default_rng(seed + 1).choice(len(real), count, replace=False))
        baseline.update(_mode_metrics(as_samples(real)[index], real, kind, extractor))
        baseline["n_modes"] = count
    return baseline


def _training_baseline(
    config: dict, real: Dataset, n: int, metrics: tuple[str, ...] | None, features: str, seed: int, cache: Path | None,
    device: torch.device | str, progress: bool = False,
) -> dict:
    """`n` samples of the run's training data scored exactly as the generator was, against a held-out reference.

    What a generator that drew its own training data would score, at the protocol of the
    generator's own figures: the same count, reference and features (the two real halves of
    `_real_baseline` are scored at half the count, which raises precision and recall).
    """
    training = _training_data(config)
    drawn = _subset(training, min(n, len(training)), seed + 2)
    scored = evaluate_samples(
        as_samples(drawn), real, metrics=metrics, features=features, seed=seed, cache=cache, device=device, progress=progress,
    )
    return {**scored["metrics"], "n": len(drawn)}


def evaluate(
    generator, real: Dataset, *, n: int | None = None, metrics: tuple[str, ...] | None = None,
    features: str | nn.Module = "auto", seed: int = 0, real_baseline: bool = False, cache: Path | None = None,
    device: torch.device | str = "cpu", progress: bool = False,
) -> dict:
    """Draws `n` samples from `generator` (anything with `.sample(n, seed)` returning data-space samples,
    e.g. `ganforge.load_generator(run)`) and scores them against `real`; see `evaluate_samples`.

    `n` defaults to 2,500 for the 2D mixtures, 26,000 for Stacked MNIST, else as many as
    the reference holds (at most 10,000). Returns `evaluate_samples`'s dict plus "seconds".
    """
    start = time.perf_counter()
    kind = domain(real)
    if kind == "table":
        return _evaluate_table(generator, real, n, seed, start)
    if n is None:
        n = {"mixture": MIXTURE_SAMPLES, "stackedmnist": STACKED_SAMPLES}.get(kind, min(len(real), MAX_REFERENCE))
    if n < 2:
        raise GanforgeError(f"--n {n} is invalid: the metrics need at least 2 samples")
    classes = len(getattr(generator, "classes", []))
    labels = torch.arange(n) % classes if classes else None  # a conditional generator: every class alike
    samples = (generator.sample(n, seed=seed, labels=labels) if classes else generator.sample(n, seed=seed)).cpu()
    if samples.shape[1:] != real.samples.shape[1:] and real.kind == "vectors":
        raise GanforgeError(f"the generator makes samples of shape {tuple(samples.shape[1:])} but the data has {tuple(real.samples.shape[1:])}")
    result = evaluate_samples(
        samples, real, metrics=metrics, features=features, seed=seed, real_baseline=real_baseline, cache=cache, device=device,
        labels=labels, progress=progress,
    )
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _evaluate_table(generator, real: Dataset, n: int | None, seed: int, start: float) -> dict:
    """Table metrics (`metrics.tabular.table_report`) of n generated rows, as many as the real table (<= 10,000) by default."""
    from ganforge.metrics.tabular import table_report
    from ganforge.tabular import sample_rows

    n = n or min(len(real), MAX_REFERENCE)
    synthetic, _ = sample_rows(generator, n, seed=seed)
    metrics, notes = table_report(real.table, synthetic, real.transform["columns"], real.info.get("target"), real.info.get("test"), seed)
    return {"features": "table", "n": n, "n_real": len(real), "notes": notes, "metrics": metrics, "seconds": round(time.perf_counter() - start, 2)}


def reference_dataset(config: dict) -> Dataset:
    """The real data a run is judged against: MNIST's 10,000 test images for `mnist:` runs, else the training data."""
    data = config["data"]
    spec = parse_spec(data)
    if spec.source == "mnist":
        try:
            test = load_mnist(spec.path, config.get("image_size"), split="test")
            return Dataset(data, "images", test.samples, test.transform, test.labels, info={"split": "t10k"})
        except GanforgeError:
            pass  # no test files: the training images are the reference
    dataset = _training_data(config)
    if dataset.kind == "table":
        dataset.info["target"] = config.get("target")
        if config.get("target"):
            check_target(config["target"], dataset.transform)
        if config.get("test_data"):
            dataset.info["test"] = read_held_out(Path(config["test_data"]).expanduser(), table_options(config), dataset.transform)
    return dataset


def _training_data(config: dict) -> Dataset:
    """The data a run trained on, loaded as `ganforge train` loads it."""
    options = table_options(config)
    return load_dataset(config["data"], config.get("image_size"), config.get("channels"), config.get("on_bad_image", "error"), options)


def evaluate_run(
    run_dir: str | Path, *, n: int | None = None, metrics: tuple[str, ...] | None = None, features: str = "auto",
    seed: int = 0, real_baseline: bool = False, cache: Path | None = None, device: str = "cpu",
    target: str | None = None, test_data: str | None = None, progress: bool = False,
) -> dict:
    """Evaluates a run folder's exported generator; writes the result to eval.json and appends it to eval.jsonl.

    `target` and `test_data` (tables) replace the run's own settings of those keys.

    Returns the record: run, step, data, reference, time, then `evaluate`'s keys.
    """
    from ganforge.export import load_generator
    from ganforge.rundir import CONFIG, write_json

    run_dir = Path(run_dir)
    generator = load_generator(run_dir, device)
    if n is not None:
        check_count("--n", n, MIN_EVAL_SAMPLES, MAXIMA["eval_n"], tuple(generator.spec["sample_shape"]), device)
    try:
        config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
        data = config["data"]
        if not isinstance(data, str):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GanforgeError(f"{run_dir / CONFIG} cannot be read ({type(err).__name__}): expected the config.json of a ganforge run") from None
    for flag, key, value in (("--target", "target", target), ("--test-data", "test_data", test_data)):
        if value is not None:
            if not generator.makes_rows:
                raise GanforgeError(f"{flag} {cut(value)} applies to table runs, but {run_dir} was trained on data={cut(data)}")
            config = {**config, key: value}
    real = reference_dataset(config)
    result = evaluate(
        generator, real, n=n, metrics=metrics, features=features, seed=seed, real_baseline=real_baseline, cache=cache, device=device,
        progress=progress,
    )
    if real_baseline and "split" in real.info:  # a held-out reference (MNIST's test images)
        result["real_baseline"]["training"] = _training_baseline(config, real, result["n"], metrics, features, seed, cache, device, progress)
    step = generator.spec.get("step")
    reference = f"{real.name} ({real.info.get('split', 'training data')}, {len(real)} samples)"
    record = {"run": str(run_dir), "step": step, "data": data, "reference": reference, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "seed": seed, **result}
    write_json(run_dir / EVAL_JSON, record)
    with open(run_dir / EVAL_HISTORY, "a", encoding="utf-8") as history:
        history.write(json.dumps(record) + "\n")
    return record


class TrainingEvaluation:
    """`evaluate` for a training loop: the run's reference data loaded once, its settings fixed.

    The reference is loaded on the CPU, apart from the training set (MNIST runs are judged
    on the test images, as `ganforge eval` does); real-data features are cached as for
    `ganforge eval`.
    """

    def __init__(self, config, device: torch.device | str = "cpu") -> None:
        self.n, self.seed, self.metric, self.device = config.eval_n, config.seed, config.best_metric, device
        self.real = reference_dataset(asdict(config))
        reported = reported_metrics(domain(self.real))
        if self.metric not in reported:
            raise GanforgeError(f"best_metric={self.metric!r} is not measured on data={config.data!r}: expected one of {', '.join(reported)}")

    def __call__(self, generator) -> dict:
        """The metrics of `generator` (a `SampleableGenerator`), including `best_metric`'s value."""
        return evaluate(generator, self.real, n=self.n, seed=self.seed, cache=cache_dir(), device=self.device)["metrics"]
