import dataclasses
import json
import re

import pytest

from mlp_jax import config as C


def test_defaults_are_frozen_and_flat_keys_cover_every_field():
    cfg = C.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    flat = C.to_flat_dict(cfg)
    assert flat["model.hidden_sizes"] == (128, 64) and flat["model.dropout"] == 0.2
    assert flat["optim.learning_rate"] == 1e-3
    assert flat["seed"] == 0
    assert len(flat) == sum(
        len(dataclasses.fields(getattr(cfg, f.name))) if dataclasses.is_dataclass(getattr(cfg, f.name)) else 1
        for f in dataclasses.fields(cfg)
    )


def test_overrides_parse_each_type():
    cfg = C.apply_overrides(
        C.Config(),
        [
            "train.epochs=5",
            "model.hidden_sizes=256,128",
            "optim.learning_rate=3e-3",
            "data.path=my.csv",
            "data.target=label",
            "workdir=/tmp/run1",
            "train.progress=false",
            "optim.name=sgd",
            "data.n_samples=1e4",
        ],
    )
    assert cfg.train.epochs == 5
    assert cfg.model.hidden_sizes == (256, 128)
    assert cfg.optim.learning_rate == pytest.approx(3e-3)
    assert (cfg.data.path, cfg.data.target, cfg.workdir) == ("my.csv", "label", "/tmp/run1")
    assert cfg.train.progress is False
    assert cfg.optim.name == "sgd"
    assert cfg.data.n_samples == 10_000


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optim.learnin_rate=1", "did you mean optim.learning_rate"),
        ("epochs=3", "did you mean train.epochs"),
        ("train.epochs=five", "train.epochs: expected int, got 'five'"),
        ("train.epochs=2.5", "train.epochs: expected int"),
        ("optim.learning_rate=fast", "optim.learning_rate: expected float"),
        ("train.progress=maybe", "train.progress: expected bool"),
        ("optim.name=rmsprop", "optim.name: 'rmsprop' is not one of adam, adamw, sgd"),
        ("model.hidden_sizes=128,x", "model.hidden_sizes: expected int"),
        ("model.hidden_sizes=0", "model.hidden_sizes: needs positive sizes"),
        ("data.val_fraction=1.5", "data.val_fraction: must be in (0, 1)"),
        ("train.batch_size=-1", "train.batch_size: must be >= 1 (0 = auto)"),
        ("train.patience=-2", "train.patience: must be >= 0"),
        ("noequals", "not of the form key=value"),
        ("seed=-1", "seed: must be in [0, 2_000_000_000]"),
        ("model.hidden_sizes=64,,32", "model.hidden_sizes: empty item in '64,,32'"),
        ("data.drop=target", "data.drop: names the target column"),
        ("sweep.train.members=2,3", "sweep.train.members: cannot be swept (a sweep's members are its grid"),
        ("seed=99999999999999", "seed: must be in [0, 2_000_000_000]"),
        ("data.synthetic_seed=4294967296", "data.synthetic_seed: must be in [0, 2_000_000_000]"),
        ("sweep.seed=0,3000000000", "seed: must be in [0, 2_000_000_000] (got 3000000000)"),
    ],
)
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(C.ConfigError, match=None) as info:
        C.apply_overrides(C.Config(), [item])
    assert message in str(info.value)


def test_empty_lists_parse_with_or_without_parentheses():
    for raw in ("data.drop=", "data.drop=()", "data.categorical=( )"):
        key = raw.partition("=")[0]
        assert C.to_flat_dict(C.apply_overrides(C.Config(), [raw]))[key] == ()
    assert C.apply_overrides(C.Config(), ["model.hidden_sizes=(64,)"]).model.hidden_sizes == (64,)


def test_json_round_trip_and_diff():
    cfg = C.apply_overrides(C.Config(), ["model.hidden_sizes=32,16,8", "optim.name=adamw"])
    back = C.from_json(C.to_json(cfg))
    assert back == cfg
    json.loads(C.to_json(cfg))  # valid JSON
    other = C.apply_overrides(cfg, ["train.epochs=99", "seed=3"])
    assert C.diff(cfg, other) == ["seed", "train.epochs"]
    assert C.diff(cfg, other, ignore=("train.epochs",)) == ["seed"]


def test_help_lists_every_key_with_type_and_default():
    text = C.help_text(C.Config())
    for key in C.to_flat_dict(C.Config()):
        assert key in text
    assert re.search(r"model\.hidden_sizes\s+int,\.\.\.\s+default: 128,64", text)
    assert re.search(r"model\.dropout\s+float\s+default: 0\.2", text)
    assert re.search(r"train\.batch_size\s+int\s+default: auto", text)
    assert re.search(r"model\.activation\s+\S+\s+default: relu", text)
    assert "{adam,adamw,sgd}" in text


@pytest.mark.parametrize(
    ("n_train", "expected"),
    [
        (10, {"batch_size": 10, "epochs": 200, "patience": 20}),  # never more than the training rows
        (105, {"batch_size": 16, "epochs": 200, "patience": 20}),  # iris: 6 steps per epoch, not 1
        (280, {"batch_size": 16, "epochs": 200, "patience": 20}),  # a 400-row table: 17 steps per epoch
        (1_500, {"batch_size": 88, "epochs": 200, "patience": 20}),
        (14_000, {"batch_size": 256, "epochs": 100, "patience": 10}),
        (70_000, {"batch_size": 256, "epochs": 30, "patience": 5}),
    ],
)
def test_auto_budget_follows_the_training_rows(n_train, expected):
    assert C.auto_budget(n_train) == expected
    resolved = C.resolve_auto(C.Config(), n_train).train
    assert (resolved.batch_size, resolved.epochs, resolved.patience) == tuple(expected.values())
    assert resolved.batch_size % 8 == 0 or resolved.batch_size == n_train
    assert n_train // resolved.batch_size >= (16 if n_train >= 256 else 1)


def test_auto_on_the_command_line_means_the_rule_and_elsewhere_is_an_error():
    cfg = C.apply_overrides(
        C.Config(),
        ["train.batch_size=32", "train.patience=3", "train.epochs=7"],
    )
    back = C.apply_overrides(cfg, ["train.batch_size=AUTO", "train.patience=auto", "train.epochs=auto"])
    assert back == C.Config()
    for bad in ("optim.learning_rate=auto", "seed=auto", "model.activation=auto", "model.hidden_sizes=auto"):
        with pytest.raises(C.ConfigError, match=bad.split("=")[0]):
            C.apply_overrides(C.Config(), [bad])
    # 0.999999999 is 1.0 in float32, where the step computes: all units dropped, NaN in a sweep
    for bad in ("model.dropout=-0.5", "model.dropout=1", "model.dropout=0.999999999", "model.hidden_sizes=64,0"):
        with pytest.raises(C.ConfigError, match=bad.split("=")[0]):
            C.apply_overrides(C.Config(), [bad])


def test_explicit_budget_is_kept_and_resolution_is_deterministic():
    cfg = C.apply_overrides(C.Config(), ["train.batch_size=64", "train.patience=0"])
    r = C.resolve_auto(cfg, 500).train
    assert (r.batch_size, r.epochs, r.patience) == (64, 200, 0)  # patience 0 = never stop early, not auto
    assert C.resolve_auto(cfg, 500) == C.resolve_auto(cfg, 500) == C.resolve_auto(C.resolve_auto(cfg, 500), 500)


@pytest.mark.parametrize("value", ["0", "-1", "-0.5"])
def test_huber_delta_must_be_positive(value):
    with pytest.raises(C.ConfigError, match=r"train\.huber_delta: must be > 0"):
        C.apply_overrides(C.Config(), ["data.task=regression", "train.loss=huber", f"train.huber_delta={value}"])
    assert C.apply_overrides(C.Config(), ["train.huber_delta=0.5"]).train.huber_delta == 0.5


def test_every_float_key_must_be_finite():
    floats = [k for k, (tp, _) in C.field_specs(C.Config()).items() if tp is float]
    assert "optim.learning_rate" in floats and "train.huber_delta" in floats
    for key in floats:
        for bad in ("inf", "-inf", "nan"):
            with pytest.raises(C.ConfigError, match=rf"^{re.escape(key)}: must be a finite number"):
                C.apply_overrides(C.Config(), [f"{key}={bad}"])
    # a sweep value too (each value is validated as its key)
    with pytest.raises(C.ConfigError, match=r"optim\.learning_rate: must be a finite number"):
        C.apply_overrides(C.Config(), ["sweep.optim.learning_rate=1e-3,inf"])
    # and a config built in code, not only from overrides
    with pytest.raises(C.ConfigError, match=r"optim\.momentum: must be a finite number"):
        C.validate(dataclasses.replace(C.Config(), optim=C.OptimConfig(momentum=float("nan"))))


def test_min_delta_must_not_be_negative():
    with pytest.raises(C.ConfigError, match=r"train\.min_delta: must be >= 0"):
        C.apply_overrides(C.Config(), ["train.min_delta=-0.01"])
    assert C.apply_overrides(C.Config(), ["train.min_delta=0.001"]).train.min_delta == 0.001
