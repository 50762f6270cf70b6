"""The speed settings: precision, compile, channels_last, fused Adam and the guard without host waits.

Each setting changes how the iteration runs, never what it computes: results match the plain
fp32 eager run bit for bit where the arithmetic is the same, and within rounding otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import ganforge.training.state as trainer_module
from ganforge.config import diff, load_yaml, make_config, resolve
from ganforge.data import load_dataset
from ganforge.errors import GanforgeError
from ganforge.losses import get_loss
from ganforge.noise import NoiseSampler
from ganforge.presets import PRESETS
from ganforge.steps import discriminator_step, generator_step
from ganforge.training.state import PRECISIONS, Trainer, pick_device
from helpers import digits_args

TINY = {"device": "cpu", "batch_size": 16, "g_width": 4, "d_width": 4, "ema_decay": 0.9}


@contextmanager
def no_host_reads() -> Iterator[None]:
    """Within the block, reading a tensor's value on the host (bool, .item(), .tolist()) fails the test."""

    def no_host_read(*args):
        raise AssertionError("a device value was read on the host")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("__bool__", "item", "tolist"):
            patch.setattr(torch.Tensor, name, no_host_read)
        yield


def make_trainer(data: str = "digits", messages: list | None = None, **overrides) -> Trainer:
    config = make_config({"data": data, **TINY, **overrides})
    dataset = load_dataset(config.data)
    config = resolve(config, dataset.kind, dataset.sample_shape, "test")
    device = pick_device(config.device)
    trainer = Trainer(config, dataset, device, say=(messages.append if messages is not None else print))
    dataset.to(device)
    return trainer


def run(trainer: Trainer, iterations: int) -> list[list[float]]:
    """The logged scalars (d_loss, g_loss, D(x), D(G(z))) of each iteration."""
    return [trainer.iteration(skip_nonfinite=True)[0].tolist() for _ in range(iterations)]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, net in (("G", trainer.generator), ("D", trainer.discriminator)) for k, v in net.state_dict().items()}


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("precision", "fp8", "precision='fp8' is invalid: expected one of fast, fp32, bf16, fp16"),
        ("compile", "fast", "compile='fast' is invalid: expected one of off, on, graphs"),
        ("channels_last", "maybe", "channels_last='maybe' is invalid: expected true or false"),
        ("threads", "0", "threads=0 is invalid: expected an integer >= 1"),
    ],
)
def test_bad_speed_values_are_one_clear_line(key, value, expected):
    with pytest.raises(GanforgeError) as err:
        make_config({key: value})
    assert str(err.value) == expected


def test_yaml_on_and_off_are_read_as_compile_choices(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("compile: on\nchannels_last: off\n")
    config = make_config(load_yaml(path))
    assert (config.compile, config.channels_last) == ("on", False)
    path.write_text("compile: off\n")
    assert make_config(load_yaml(path)).compile == "off"


def test_speed_settings_may_change_on_resume_and_channels_last_defaults_to_conv():
    conv = resolve(make_config({"data": "digits"}), "images", (1, 8, 8), "digits")
    mlp = resolve(make_config({"data": "ring8"}), "vectors", (2,), "ring8")
    assert conv.channels_last is True and mlp.channels_last is False
    saved = dataclasses.asdict(conv)
    assert diff(saved, dataclasses.replace(conv, precision="bf16", compile="on", channels_last=False)) == []


def test_threads_apply_on_a_cpu_and_may_change_on_resume():
    ring = resolve(make_config({"data": "ring8"}), "vectors", (2,), "ring8")
    assert ring.threads is None and trainer_module.cpu_threads(ring, torch.device("cpu")) is None
    two = dataclasses.replace(ring, threads=2)
    assert trainer_module.cpu_threads(two, torch.device("cpu")) == 2
    assert trainer_module.cpu_threads(two, torch.device("cuda")) is None
    assert diff(dataclasses.asdict(ring), two) == []


def test_a_run_sets_its_threads_only_while_it_trains(cli, tmp_path, monkeypatch):
    seen = []
    iteration = Trainer.iteration

    def spy(self, skip_nonfinite):
        seen.append(torch.get_num_threads())
        return iteration(self, skip_nonfinite)

    monkeypatch.setattr(Trainer, "iteration", spy)
    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    args = ["train", "--data", "ring8", "--steps", "3", "--out", tmp_path / "run", "--device", "cpu", "g_width=4", "d_width=4"]
    assert cli(*args, f"threads={want}").code == 0
    assert set(seen) == {want} and torch.get_num_threads() == before


def test_fp16_refused_where_autocast_cannot_run():
    config = resolve(make_config({"data": "digits", "precision": "fp16"}), "images", (1, 8, 8), "digits")
    with pytest.raises(GanforgeError, match="precision=fp16 is not available on device meta: use precision=fp32"):
        trainer_module.resolve_speed(config, torch.device("meta"))


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("capabilities", "expected"), [({"avx512_bf16": True}, "bf16"), ({"amx_bf16": True}, "bf16"), ({}, "fp32")])
def test_fast_precision_is_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    fast = resolve(make_config({"data": "photos/"}), "images", (3, 32, 32), "photos")
    assert fast.precision == "fast"
    assert trainer_module.resolve_speed(fast, torch.device("cpu")).precision == expected
    for chosen in ("fp32", "bf16"):  # a precision asked for is the one used
        assert trainer_module.resolve_speed(dataclasses.replace(fast, precision=chosen), torch.device("cpu")).precision == chosen
    assert trainer_module.native_bf16(torch.device("meta")) is False


def test_the_image_presets_run_fast_and_the_small_networks_in_fp32():
    """bf16 pays where the networks are large enough to be compute bound (MNIST-sized conv nets: docs/BENCHMARKS.md)."""
    assert {name: preset["precision"] for name, preset in PRESETS.items()} == {
        "ring8": "fp32", "grid25": "fp32", "vectors": "fp32", "images": "fast", "small_images": "fast", "digits": "fp32",
        "stackedmnist": "fast", "table": "fp32",
    }


def test_a_run_records_the_precision_it_used(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(*digits_args(run, 2, "--precision", "bf16")).code == 0
    assert json.loads((run / "config.json").read_text())["precision_used"] == "bf16"


# After 5 iterations from the same start, a low-precision player's distance to the fp32 run, as a fraction of
# how far the fp32 run moved it (measured on CPU: bf16 G 0.19, D 0.040; fp16 G 0.14, D 0.004), stays under
# these; the logged scalars stay within LOW_PRECISION_SCALARS of fp32's (measured: 7e-5 bf16, 1.1e-5 fp16).
LOW_PRECISION_WEIGHTS = {"G": 0.4, "D": 0.15}
LOW_PRECISION_SCALARS = 1e-3


def _flat(state: dict[str, torch.Tensor], player: str) -> torch.Tensor:
    return torch.cat([v.flatten() for k, v in state.items() if k.startswith(player + ".") and "running" not in k and v.is_floating_point()])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_on_cpu_follows_fp32_for_several_iterations_and_moves_the_weights(precision):
    """The networks run in `precision` (weights stay fp32), no update is skipped, every weight moves, and
    5 iterations end within LOW_PRECISION_WEIGHTS of the fp32 run from the same start."""
    dtypes = []
    low, full = make_trainer(precision=precision), make_trainer()
    low.generator.net[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    start = {k: v.clone() for k, v in weights(low).items()}
    low_scalars, full_scalars = run(low, 5), run(full, 5)
    assert PRECISIONS[precision] in dtypes and torch.float32 not in dtypes
    assert all(p.dtype == torch.float32 for p in low.generator.parameters()), "the weights stay fp32"
    assert low.skipped_steps == 0
    moved = weights(low)
    assert all(not torch.equal(moved[k], start[k]) for k in start if k.endswith("weight")), "every weight moves"
    torch.testing.assert_close(torch.tensor(low_scalars), torch.tensor(full_scalars), rtol=0, atol=LOW_PRECISION_SCALARS)
    for player, tolerance in LOW_PRECISION_WEIGHTS.items():
        apart = (_flat(moved, player) - _flat(weights(full), player)).norm()
        assert apart <= tolerance * (_flat(weights(full), player) - _flat(start, player)).norm(), player


def test_fp16_on_cpu_uses_one_grad_scaler_per_player():
    speed = make_trainer(precision="fp16").speed
    assert isinstance(speed.g_scaler, torch.amp.GradScaler) and isinstance(speed.d_scaler, torch.amp.GradScaler)
    assert speed.g_scaler is not speed.d_scaler


def test_fp32_is_unchanged_by_the_speed_plumbing():
    """fp32 eager with the Trainer's fused Adam equals the two step functions called by hand."""
    trainer = make_trainer(channels_last=False, ema_decay=0.0)
    generator, discriminator = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    config = trainer.config
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2), fused=True)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=(config.beta1, config.beta2), fused=True)
    noise = NoiseSampler(config.latent_dim, config.noise, "cpu", seed=config.seed + 1)
    data = trainer.dataset
    sampler = copy.deepcopy(trainer.sampler)
    loss = get_loss(config.loss)
    for _ in range(3):
        trainer.iteration(skip_nonfinite=False)
        real = data.to_model_space(data.samples[sampler.next()])
        discriminator_step(generator, discriminator, d_opt, loss, noise, real)
        generator_step(generator, discriminator, g_opt, loss, noise, config.batch_size)
    expected = {**{f"G.{k}": v for k, v in generator.state_dict().items()}, **{f"D.{k}": v for k, v in discriminator.state_dict().items()}}
    for name, value in weights(trainer).items():
        assert torch.equal(value, expected[name]), name


# --- memory layout --------------------------------------------------------------------------------


def test_channels_last_gives_the_same_training_within_rounding():
    nhwc, nchw = make_trainer(channels_last=True), make_trainer(channels_last=False)
    assert nhwc.generator.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nchw.generator.net[0].weight.is_contiguous()
    torch.testing.assert_close(torch.tensor(run(nhwc, 4)), torch.tensor(run(nchw, 4)), rtol=1e-4, atol=1e-5)
    a, b = weights(nhwc), weights(nchw)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


# --- the divergence guard without host waits -------------------------------------------------------


class _NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class Faulty(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear, self.norm, self.fault = nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), False

    def forward(self, x):
        y = self.linear(x)
        return self.norm(_NanGradient.apply(y) if self.fault else y)


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_fused_adam_skips_a_non_finite_step_on_the_device_without_reading_it(which):
    """With a fused optimizer the guard never reads a value on the host, and the skipped step leaves
    parameters, BatchNorm statistics and optimizer state (moments, step counts) bit-identical."""
    torch.manual_seed(0)
    G, D = Faulty(3, 2), Faulty(2, 1)
    g_opt, d_opt = torch.optim.Adam(G.parameters(), lr=0.01, fused=True), torch.optim.Adam(D.parameters(), lr=0.01, fused=True)
    noise, real, loss = NoiseSampler(3, seed=1), torch.randn(16, 2), get_loss("nonsaturating")

    def step():
        if which == "generator":
            return generator_step(G, D, g_opt, loss, noise, 16, skip_nonfinite=True)
        return discriminator_step(G, D, d_opt, loss, noise, real, skip_nonfinite=True)

    assert step().stepped
    trained, optimizer = (G, g_opt) if which == "generator" else (D, d_opt)
    before = copy.deepcopy((trained.state_dict(), optimizer.state_dict()))
    trained.fault = True

    with no_host_reads():
        result = step()
    assert isinstance(result.applied, torch.Tensor) and result.stepped is False
    after = (trained.state_dict(), optimizer.state_dict())
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key]), key
    for index, state in before[1]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, after[1]["state"][index][key]), (index, key)


def test_an_iteration_never_reads_the_device():
    trainer = make_trainer()
    run(trainer, 1)
    with no_host_reads():
        scalars, applied = trainer.iteration(skip_nonfinite=True)
    assert applied is not None and bool(applied) and torch.isfinite(scalars).all()


# --- torch.compile ---------------------------------------------------------------------------------


class _BreaksInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("inductor: assert_size_stride failed\nmore detail")


class _FailingCompile(nn.Module):
    """Stands in for a compiled network whose backward fails to compile, after its forward ran
    (so it has already updated BatchNorm statistics the trial must put back)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, x):
        return _BreaksInBackward.apply(self.inner(x))


def test_a_failing_compile_falls_back_to_eager_with_one_warning_and_identical_results(monkeypatch):
    monkeypatch.setattr(trainer_module.torch, "compile", lambda module, mode=None: _FailingCompile(module))
    messages: list[str] = []
    compiled, eager = make_trainer(compile="on", messages=messages), make_trainer()
    assert len(messages) == 2 and all(m.startswith("warning: torch.compile failed for the Conv") for m in messages), messages
    assert "RuntimeError: inductor: assert_size_stride failed)" in messages[0] and "\n" not in messages[0]
    assert compiled.g_run is compiled.generator and compiled.d_run is compiled.discriminator
    a, b = weights(compiled), weights(eager)
    assert all(torch.equal(a[k], b[k]) for k in a), "the trial run left no trace"
    assert run(compiled, 3) == run(eager, 3)
    a, b = weights(compiled), weights(eager)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_working_compile_trial_leaves_no_trace_and_checkpoints_hold_plain_modules(monkeypatch):
    wrappers = []

    class Wrapper(nn.Module):  # a "compiled" module that runs its network unchanged, like OptimizedModule
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module
            wrappers.append(self)

        def forward(self, x):
            return self._orig_mod(x)

    monkeypatch.setattr(trainer_module.torch, "compile", lambda module, mode=None: Wrapper(module))
    compiled, eager = make_trainer(compile="graphs"), make_trainer()
    assert compiled.g_run is wrappers[0] and compiled.d_run is wrappers[1]
    assert run(compiled, 3) == run(eager, 3)
    state = compiled.state_dict()
    assert not [k for k in (*state["generator"], *state["discriminator"]) if k.startswith(("_orig_mod.", "module."))]


@pytest.mark.slow
def test_torch_compile_on_cpu_matches_eager():
    """Real torch.compile (inductor) of a tiny MLP pair: the same loss trajectory within rounding."""
    overrides = {"g_depth": 1, "d_depth": 1, "r1_gamma": 0.0}
    messages: list[str] = []
    compiled, eager = make_trainer("ring8", messages, compile="on", **overrides), make_trainer("ring8", **overrides)
    assert not messages, messages
    assert type(compiled.g_run).__name__ == "OptimizedModule"
    torch.testing.assert_close(torch.tensor(run(compiled, 5)), torch.tensor(run(eager, 5)), rtol=1e-4, atol=1e-5)
    assert not [k for k in compiled.state_dict()["generator"] if k.startswith("_orig_mod.")]


@pytest.mark.slow
def test_compile_with_channels_last_and_a_transposed_conv_on_a_1x1_latent_runs_or_falls_back_cleanly():
    """The generator's first layer reads z as a 1x1 map (a ConvTranspose2d, computed as a matrix
    product); with channels_last, inductor has failed a stride assertion on the convolution. Either
    it compiles and matches eager, or the run warns in one line and goes on eagerly with identical results."""
    messages: list[str] = []
    compiled = make_trainer(messages=messages, compile="on", channels_last=True)
    eager = make_trainer(channels_last=True)
    assert all(m.startswith("warning: torch.compile failed") and "\n" not in m for m in messages), messages
    if messages:
        assert run(compiled, 2) == run(eager, 2)
    else:
        torch.testing.assert_close(torch.tensor(run(compiled, 2)), torch.tensor(run(eager, 2)), rtol=1e-4, atol=1e-5)


# --- on a CUDA device (skipped by default; run with `pytest -m gpu`) --------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("mode", ["on", "graphs"])
def test_compiled_iteration_on_cuda_matches_eager(mode):
    """compile=on and compile=graphs (CUDA graphs) train like eager, within TF32 rounding."""
    messages: list[str] = []
    compiled, eager = make_trainer(messages=messages, device="cuda", compile=mode), make_trainer(device="cuda")
    assert not messages, messages
    torch.testing.assert_close(torch.tensor(run(compiled, 5)), torch.tensor(run(eager, 5)), rtol=2e-3, atol=2e-3)
    a, b = weights(compiled), weights(eager)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=2e-3, atol=2e-3, msg=name)


@pytest.mark.gpu
@needs_cuda
def test_bf16_channels_last_fused_adam_on_cuda_stays_finite_and_never_reads_the_device():
    trainer = make_trainer(device="cuda", precision="bf16", channels_last=True)
    assert trainer.speed.fused_adam and trainer.g_optimizer.defaults["fused"]
    run(trainer, 2)
    torch.cuda.synchronize()
    with no_host_reads():
        scalars, applied = trainer.iteration(skip_nonfinite=True)
    assert bool(applied) and torch.isfinite(scalars).all()


@pytest.mark.gpu
@needs_cuda
def test_compile_with_channels_last_and_a_transposed_conv_on_a_1x1_latent_on_cuda():
    messages: list[str] = []
    compiled = make_trainer(messages=messages, device="cuda", compile="on", channels_last=True, g_width=16, d_width=16)
    eager = make_trainer(device="cuda", channels_last=True, g_width=16, d_width=16)
    assert all(m.startswith("warning: torch.compile failed") and "\n" not in m for m in messages), messages
    if messages:
        assert run(compiled, 2) == run(eager, 2)
    else:
        torch.testing.assert_close(torch.tensor(run(compiled, 2)), torch.tensor(run(eager, 2)), rtol=2e-3, atol=2e-3)

