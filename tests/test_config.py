"""Config: coercion of YAML/command-line values, validation messages, YAML files, resolution of auto values."""

from __future__ import annotations

import dataclasses

import pytest

from ganforge.config import Config, diff, field_names, load_yaml, make_config, parse_overrides, resolve
from ganforge.errors import GanforgeError
from ganforge.presets import PRESETS


def test_no_layers_gives_the_defaults():
    assert make_config() == Config()
    assert make_config().data == "digits" and make_config().loss is None  # auto: the preset picks the loss


def test_values_are_coerced_to_the_field_types():
    config = make_config({
        "steps": "100", "batch_size": 32.0, "lr_g": "1e-3", "lr_d": 2, "latent_dim": "1e1",
        "seed": "3e0", "image_size": "auto", "g_width": "none", "loss": "hinge", "data": "ring8",
    })
    assert config.steps == 100 and type(config.steps) is int
    assert config.batch_size == 32 and type(config.batch_size) is int
    assert config.lr_g == 0.001 and type(config.lr_g) is float
    assert config.lr_d == 2.0 and type(config.lr_d) is float
    assert config.latent_dim == 10 and config.seed == 3
    assert config.image_size is None and config.g_width is None
    assert config.loss == "hinge"


@pytest.mark.parametrize("spelling", ["none", "None", " NONE "])
def test_none_is_a_norm_not_auto(spelling, tmp_path):
    """'none' names no normalisation for g_norm and d_norm, on the command line and in YAML; 'auto' stays auto."""
    config = make_config(parse_overrides([f"d_norm={spelling}", f"g_norm={spelling}"]))
    assert (config.d_norm, config.g_norm) == ("none", "none")
    (tmp_path / "run.yaml").write_text("d_norm: none\ng_norm: auto\n")
    config = make_config(load_yaml(tmp_path / "run.yaml"))
    assert (config.d_norm, config.g_norm) == ("none", None)
    resolved = resolve(make_config({"data": "photos/", "d_norm": "none"}), "images", (3, 32, 32), "photos")
    assert (resolved.d_norm, resolved.g_norm) == ("none", "batch")


def test_later_layers_win():
    config = make_config({"steps": 5, "lr_g": 0.1}, {"steps": "7"})
    assert (config.steps, config.lr_g) == (7, 0.1)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps", -5), ("steps", 0), ("steps", 2.5), ("steps", "ten"), ("steps", True), ("steps", [1]),
        ("batch_size", 0), ("latent_dim", 0), ("lr_g", 0), ("lr_d", -1e-4), ("lr_g", "nan"), ("lr_g", "inf"),
        ("beta1", 1.0), ("beta2", -0.1), ("ema_decay", 1), ("gp_weight", -1), ("r1_gamma", -0.5), ("r1_every", 0),
        ("loss", "hinged"), ("noise", "cauchy"), ("arch", "vit"), ("g_norm", "layer"), ("channels", 2),
        ("device", "tpu"), ("on_bad_image", "ignore"), ("g_extra_layers", -1), ("keep_checkpoints", 0),
        ("data", ""), ("data", None), ("seed", "x"), ("d_mbstd", 1), ("d_mbstd", -2),
    ],
)
def test_bad_values_name_the_key_and_the_value(key, value):
    with pytest.raises(GanforgeError) as info:
        make_config({key: value})
    message = str(info.value)
    assert message.startswith(f"{key}="), message
    shown = message.split(" is invalid")[0][len(key) + 1:]
    assert shown in (repr(value), str(value), repr(float(value)) if isinstance(value, (int, float)) else None), message
    assert "is invalid: expected" in message


def test_batch_size_must_be_a_multiple_of_pack():
    with pytest.raises(GanforgeError, match="batch_size=10 is invalid: expected a multiple of pack=4"):
        make_config({"batch_size": 10, "pack": 4})
    assert make_config({"batch_size": 12, "pack": 4}).pack == 4


def test_minibatch_std_group_must_divide_the_discriminators_batch():
    with pytest.raises(GanforgeError, match=r"d_mbstd=5 is invalid: expected a divisor of batch_size / pack = 32"):
        make_config({"batch_size": 64, "pack": 2, "d_mbstd": 5})
    with pytest.raises(GanforgeError, match=r"d_mbstd=3 is invalid: expected a divisor of batch_size / pack = 64"):
        resolve(make_config({"data": "digits", "d_mbstd": 3}), "images", (1, 8, 8), "digits")
    assert make_config({"batch_size": 64, "pack": 2, "d_mbstd": 4}).d_mbstd == 4
    assert make_config({"batch_size": 6, "pack": 2, "d_mbstd": 4}).d_mbstd == 4  # 3 rows: one group


def test_unknown_key_suggests_the_closest():
    with pytest.raises(GanforgeError, match="unknown config key 'lr_gg'.*did you mean 'lr_g'"):
        make_config({"lr_gg": 0.1})
    with pytest.raises(GanforgeError, match="unknown config key 'zzzz'.*known keys: data, image_size"):
        make_config({"zzzz": 1})


def test_parse_overrides():
    assert parse_overrides(["lr_g=0.001", "--loss=hinge", "g-width = 8", "out=a=b"]) == {
        "lr_g": "0.001", "loss": "hinge", "g_width": "8", "out": "a=b",
    }
    with pytest.raises(GanforgeError, match="'steps' is not a key=value override"):
        parse_overrides(["steps"])
    with pytest.raises(GanforgeError, match="unknown config key 'stepz' on the command line; did you mean 'steps'"):
        parse_overrides(["stepz=3"])


def test_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: ring8\nsteps: 300\nlr_g: 1.0e-3\nloss: hinge\ng_width: auto\n")
    loaded = load_yaml(path)
    assert loaded == {"data": "ring8", "steps": 300, "lr_g": 0.001, "loss": "hinge", "g_width": "auto"}
    config = make_config(loaded, {"steps": 10})
    assert (config.data, config.steps, config.lr_g, config.g_width) == ("ring8", 10, 0.001, None)


def test_empty_yaml_is_an_empty_mapping(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert load_yaml(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [1, 2\n", "is not valid YAML"),
        ("data: ring8\n\tsteps: 3\n", "is not valid YAML"),
        ("- steps\n- 3\n", "holds a list: expected a mapping"),
        ("just a string\n", "holds a str: expected a mapping"),
        ("stpes: 10\n", "unknown config key 'stpes' in .*bad.yaml; did you mean 'steps'"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GanforgeError, match=message):
        load_yaml(path)


def test_yaml_file_must_exist_and_be_text(tmp_path):
    with pytest.raises(GanforgeError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(GanforgeError, match="is not valid YAML"):
        load_yaml(tmp_path / "binary.yaml")


# --- resolve --------------------------------------------------------------------------------

# (config, kind, sample_shape, run name, preset, keys meaningless for that architecture)
MLP_ONLY = {"g_depth", "d_depth"}
CONV_ONLY = {"g_extra_layers", "d_extra_layers", "image_size", "channels"}
TABLE_ONLY = {"category_draw"}
TABLE_READING = {"table", "columns", "header", "column_types", "target", "test_data"}  # how a table file is read and judged: auto stays auto
CASES = [
    (dict(data="ring8"), "vectors", (2,), "ring8", "ring8", CONV_ONLY | TABLE_ONLY),
    (dict(data="grid25"), "vectors", (2,), "grid25", "grid25", CONV_ONLY | TABLE_ONLY),
    (dict(data="table.csv"), "vectors", (7,), "table", "vectors", CONV_ONLY | TABLE_ONLY),
    (dict(data="digits"), "images", (1, 8, 8), "digits", "digits", MLP_ONLY | TABLE_ONLY),
    (dict(data="photos/"), "images", (3, 32, 32), "photos", "images", MLP_ONLY | TABLE_ONLY),
    (dict(data="stackedmnist:mnist"), "images", (3, 28, 28), "stackedmnist", "stackedmnist", MLP_ONLY | TABLE_ONLY),
    (dict(data="adult.data"), "table", (257,), "adult", "table", CONV_ONLY),
]


@pytest.mark.parametrize(("layer", "kind", "shape", "name", "preset", "unused"), CASES, ids=[c[3] for c in CASES])
def test_resolve_fills_every_auto_value_the_networks_use(layer, kind, shape, name, preset, unused):
    config = resolve(make_config(layer), kind, shape, name)
    values = dataclasses.asdict(config)
    # eval_n and threads stay auto: the evaluation picks eval_n from the reference data's size, torch the threads.
    missing = [k for k, v in values.items() if v is None and k not in unused | TABLE_READING | {"eval_n", "threads"}]
    assert missing == []
    for key, value in PRESETS[preset].items():
        if key != "checkpoint_every":
            assert values[key] == value, key
    assert config.arch == PRESETS[preset]["arch"]
    assert config.out == f"runs/{name}"
    if kind == "images":
        assert (config.channels, config.image_size) == (shape[0], shape[-1])


def test_an_image_set_under_thirty_thousand_is_augmented_with_an_adaptive_probability():
    def resolved(size, **layer):
        return resolve(make_config({"data": "photos/", **layer}), "images", (3, 32, 32), "photos", size=size)

    small, large = resolved(10_000), resolved(60_000)
    assert (small.augment, small.ada_target) == ("translation,cutout,color", 0.6)
    assert (large.augment, large.ada_target) == ("none", 0.0)
    assert (small.clusters, large.clusters) == (0, 400)  # pixel clusters cost CIFAR-10's folder recall and FD
    assert (small.diversity, large.diversity) == (0.0, 0.06)  # and the mode-seeking term comes with them
    assert (small.ema_kimg, small.ema_rampup, large.ema_kimg, large.ema_rampup) == (10.0, 0.05, 40.0, 0.1)  # measured on MNIST
    differ = ("augment", "ada_target", "clusters", "diversity", "ema_kimg", "ema_rampup")
    assert {k: v for k, v in dataclasses.asdict(small).items() if k not in differ} == {
        k: v for k, v in dataclasses.asdict(large).items() if k not in differ
    }
    assert resolved(None).augment == "none"  # a size not known: the larger sets' preset
    assert resolved(10_000, augment="none").augment == "none"
    assert resolved(10_000, ada_target="0").ada_target == 0.0  # always augment
    digits = resolve(make_config({"data": "digits"}), "images", (1, 8, 8), "digits", size=1797)
    assert digits.augment == "none"  # the built-in set keeps its own preset


@pytest.mark.parametrize(("layer", "kind", "shape", "name", "preset", "unused"), CASES[:1] + CASES[3:4], ids=["ring8", "digits"])
def test_resolve_fills_every_none(layer, kind, shape, name, preset, unused):
    """Every key is concrete, except the image keys for vector data and the table keys for other data, where they do not
    apply, threads, eval_n and how tables are read."""
    config = resolve(make_config(layer), kind, shape, name)
    not_applicable = (["image_size", "channels"] if kind == "vectors" else []) + ["category_draw", "threads", "eval_n"]
    assert [k for k, v in dataclasses.asdict(config).items() if v is None and k not in TABLE_READING] == not_applicable


def test_resolve_mlp_on_images_fills_the_mlp_keys():
    config = resolve(make_config({"data": "digits", "arch": "mlp"}), "images", (1, 8, 8), "digits")
    assert config.arch == "mlp"
    assert config.g_depth is not None and config.d_depth is not None


def test_resolve_keeps_user_values_and_derives_the_rest():
    user = make_config({"data": "ring8", "g_width": 7, "steps": 30, "checkpoint_every": 100, "out": "here"})
    config = resolve(user, "vectors", (2,), "ring8")
    assert config.g_width == 7 and config.d_width == PRESETS["ring8"]["d_width"]
    assert config.checkpoint_every == 30, "capped to steps, so a run always checkpoints"
    assert config.out == "here"
    assert user.d_width is None, "resolve returns a new Config"


@pytest.mark.parametrize(("kind", "shape", "latent_dim"), [("vectors", (7,), 3), ("vectors", (1,), 1), ("images", (3, 32, 32), 100), ("images", (1, 8, 8), 8)])
def test_default_latent_dim_is_below_the_data_dimension(kind, shape, latent_dim):
    assert resolve(make_config({"data": "x.npy"}), kind, shape, "x").latent_dim == latent_dim


def test_conv_on_vectors_is_an_error():
    with pytest.raises(GanforgeError, match="arch='conv' needs image data"):
        resolve(make_config({"data": "ring8", "arch": "conv"}), "vectors", (2,), "ring8")


@pytest.mark.parametrize(("data", "kind", "shape", "batch", "r1_every", "steps", "best"), [
    ("digits", "images", (1, 8, 8), 64, 1, 10_000, "fd"), ("ring8", "vectors", (2,), 512, 8, 7_000, "reverse_kl"),
    ("stackedmnist:mnist", "images", (3, 28, 28), 128, 8, 15_000, "kl"), ("mnist:mnist", "images", (1, 28, 28), 64, 8, 10_000, "fd"),
])
def test_stacked_mnist_takes_larger_batches_its_own_steps_and_keeps_the_best_kl(data, kind, shape, batch, r1_every, steps, best):
    # Stacked MNIST's 15,000 steps: docs/studies/2026-11-29-stacked-mnist-no-packing.md and 2026-12-06-stacked-mnist-recipe.md.
    config = resolve(make_config({"data": data}), kind, shape, "run")
    assert (config.pack, config.batch_size, config.r1_every, config.steps, config.best_metric) == (1, batch, r1_every, steps, best)
    assert resolve(make_config({"data": data, "pack": 4}), kind, shape, "run").pack == 4


def test_resolved_pack_must_divide_the_preset_batch():
    with pytest.raises(GanforgeError, match=f"batch_size={PRESETS['ring8']['batch_size']} is invalid: expected a multiple of pack=3"):
        resolve(make_config({"data": "ring8", "pack": 3}), "vectors", (2,), "ring8")


def test_diff_ignores_keys_that_only_steer_the_run():
    config = resolve(make_config({"data": "ring8"}), "vectors", (2,), "ring8")
    saved = dataclasses.asdict(config)
    changed = dataclasses.replace(config, steps=99, out="elsewhere", log_every=3, device="cpu", keep_checkpoints=5)
    assert diff(saved, changed) == []
    assert diff(saved, dataclasses.replace(config, lr_g=0.5)) == ["lr_g: 0.001 -> 0.5"]


def test_a_config_saved_before_a_key_existed_reads_as_that_keys_old_behaviour():
    """A run saved before d_mbstd existed ran without it: it resumes with d_mbstd=0, not with 4."""
    config = resolve(make_config({"data": "ring8"}), "vectors", (2,), "ring8")
    saved = {k: v for k, v in dataclasses.asdict(config).items() if k != "d_mbstd"}
    assert diff(saved, config) == []
    assert diff(saved, dataclasses.replace(config, d_mbstd=4)) == ["d_mbstd: 0 -> 4"]


def test_every_field_has_a_command_line_flag_and_help(monkeypatch, capsys):
    from ganforge.cli import main
    from ganforge.config import CHOICES, key_help
    from ganforge.losses import LOSSES
    from ganforge.nets import D_NORMS

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    for name in field_names():
        assert f"--{name} VALUE" in shown and key_help(name) in shown and len(key_help(name)) > 10
    # Allowed values come from the registries the keys name, and show in the help.
    assert CHOICES["loss"] == tuple(LOSSES) and CHOICES["d_norm"] == D_NORMS
    assert "; one of " + ", ".join(LOSSES) in shown


def test_flag_help_reads_the_auto_values_from_the_presets(monkeypatch, capsys):
    from ganforge import presets
    from ganforge.cli import main

    assert presets.auto_values("pack") == "auto: 1"
    assert presets.auto_values("r1_every") == "auto: 1 for other vectors, digits and tables, else 8"
    assert presets.auto_values("r2_gamma") == "auto: 0.1 for other images and image sets under 30,000, 1 for Stacked MNIST, else 0"
    assert presets.auto_values("ema_decay") == "auto: 0.995 for tables, else 0.999"
    assert presets.auto_values("d_steps_per_g_step") == "auto: 2 for tables, else 1"
    assert presets.auto_values("steps").startswith("auto: 7,000 for ring8, 16,000 for grid25, ")
    # A preset's new value shows in the help, with no second copy to keep in step.
    monkeypatch.setitem(presets.PRESETS, "digits", {**PRESETS["digits"], "batch_size": 96})
    monkeypatch.setitem(presets.PRESETS, "images", {**PRESETS["images"], "batch_size": 96})
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    expected = (
        "(auto: 128 for other vectors and Stacked MNIST, 96 for other images and digits, 64 for image sets under 30,000, "
        "500 for tables, else 512)"
    )
    assert f"samples per batch (real and generated); the global batch under torchrun {expected}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "name"),
    [("digits", "digits"), ("mnist:data/mnist", "mnist"), ("stackedmnist:data/mnist", "stackedmnist"), ("photos/cats", "cats"),
     ("table.csv", "table")],
)
def test_default_run_folder_is_named_after_the_data(spec, name):
    from ganforge.data.spec import parse_spec

    assert parse_spec(spec).name == name
