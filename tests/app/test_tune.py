"""`scoresde tune`: Ray Tune searches on a tiny toy config, and the checks made before Ray starts.

The two searches need Ray (the ``[tune]`` extra, installed by ``make install``); everything else
runs without it. Each search trains a 16-wide MLP for 40 steps on 1,000 points. The search's
picture (``scoresde.viz.search``) is drawn from plain rows here too.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import sys

import pytest
import yaml

from scoresde.app.cli import main
from scoresde.app.tune import INSTALL_HINT, default_space, parse_space, tune
from scoresde.training.config import ConfigError, apply_overrides, load_config
from scoresde.viz.search import plot_search

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed: pip install -e ".[tune]"')

STEPS, EVAL = 40, 20
TINY = [
    f"train.steps={STEPS}",
    f"train.eval_every={EVAL}",
    f"train.log_every={EVAL}",
    "train.ckpt_every=0",
    "train.warmup=0",
    "train.batch_size=64",
    "data.n_train=1000",
    "data.n_test=200",
    "model.params.hidden=16",
]


@pytest.fixture
def cfg():
    return apply_overrides(load_config("toy_mixture_vp"), TINY)


@pytest.fixture(scope="module")
def ray_here():
    """One local Ray for the searches of this file (``tune`` leaves a running Ray alone);
    started as ``tune`` starts it, on this machine's cores."""
    import ray

    from scoresde.app.tune import _start_ray

    started = _start_ray(ray, None)
    yield
    if started:
        ray.shutdown()


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- searches ----------------------------------------------------------------------------------
@needs_ray
def test_no_cluster_at_the_address_is_one_clear_error(cfg, tmp_path, capsys, monkeypatch):
    """Before the searches below (which keep a local Ray up): 'auto' finds no cluster."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    space = tmp_path / "s.yaml"
    space.write_text("train.lr: {choice: [1.0e-3]}\n")
    argv = ["tune", "--config", "toy_mixture_vp", "--space", str(space), "--address", "auto"]
    assert main([*argv, "--workdir", str(tmp_path / "out")]) == 2
    assert "cannot reach a Ray cluster at 'auto'" in capsys.readouterr().err


@needs_ray
def test_cli_search_marks_the_crash_and_writes_table_plot_best(ray_here, tmp_path, capsys):
    """Grid over lr {3e-3, 1e6}: the second diverges (NaN loss at step 2, a TrainingError), Ray
    records it, the search goes on; the table, the plot and a loadable best config come out."""
    from PIL import Image

    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {grid: [3.0e-3, 1.0e+6]}\nmodel.params.hidden: {choice: [8, 16]}\n")
    out = tmp_path / "search"
    sets = [a for s in TINY for a in ("--set", s)]
    argv = ["tune", "--config", "toy_mixture_vp", *sets, "--space", str(space), "--trials", "1"]
    assert main([*argv, "--workdir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 trials: 1 completed, 0 stopped, 1 error" in printed

    rows = sorted(_read(out / "results.csv"), key=lambda r: float(r["train.lr"]))
    assert len(rows) == 2
    good, bad = rows
    assert (good["status"], bad["status"]) == ("COMPLETED", "ERROR")
    assert "NaN" in bad["error"] and bad["eval_loss"] == ""
    assert int(good["step"]) == STEPS and int(good["model.params.hidden"]) in (8, 16)
    # The reported metric is the trial's own training run's test loss at its last evaluation,
    # and Tune received one report per evaluation (time attribute: the step).
    trial_metrics = _read(f"{good['dir']}/metrics.csv")
    evals = [r for r in trial_metrics if r["test_loss"]]
    assert float(good["eval_loss"]) == float(evals[-1]["test_loss"])
    reports = _read(f"{good['dir']}/progress.csv")
    assert [int(r["step"]) for r in reports] == [int(r["step"]) for r in evals] == [EVAL, STEPS]

    with Image.open(out / "tune.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    best = load_config(out / "best.yaml")
    assert best.train.lr == 3e-3
    assert best.model.params["hidden"] == int(good["model.params.hidden"])
    assert best.train.steps == STEPS and best.data.n_train == 1000  # the rest: the base config
    assert main(["train", "--config", str(out / "best.yaml"), "--dry-run"]) == 0


@needs_ray
def test_asha_stops_a_trial_behind_at_the_first_rung(ray_here, cfg, tmp_path):
    """One trial at a time, lr 3e-3 first, then 1e-7: at the first rung (step 20, the first
    evaluation) the second's test loss is behind the first's (1.98 vs 1.63 measured; with lr 1e-7
    the net barely moves), above ASHA's cutoff, so it is stopped there."""
    space = {"train.lr": {"grid": [3e-3, 1e-7]}}
    r = tune(cfg, space, trials=1, workdir=tmp_path, max_concurrent=1, scheduler="asha")
    rows = {row["train.lr"]: row for row in r["rows"]}
    assert rows[3e-3]["status"] == "COMPLETED" and rows[3e-3]["step"] == STEPS
    assert rows[1e-7]["status"] == "STOPPED" and rows[1e-7]["step"] == EVAL
    assert rows[1e-7]["eval_loss"] > rows[3e-3]["eval_loss"]
    assert r["best"]["train.lr"] == 3e-3 and r["best_config"].train.lr == 3e-3


# ---- checks before Ray starts ------------------------------------------------------------------
@pytest.mark.parametrize(
    "space, words",
    [
        ({"train.lrr": {"loguniform": [1e-4, 1e-2]}}, ["train.lrr", "train.lr,"]),
        (
            {"model.params.width": {"choice": [8, 16]}},
            ["model.params.width", "model.params.hidden"],
        ),
        ({"optim.lr": {"uniform": [0.1, 0.2]}}, ["optim.lr", "train"]),
    ],
)
def test_unknown_key_lists_the_valid_ones(cfg, tmp_path, space, words):
    with pytest.raises(ConfigError) as e:
        tune(cfg, space, workdir=tmp_path / "never")
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (tmp_path / "never").exists()  # nothing started


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"loguniform": [1e-2, 1e-3]}, "empty range"),
        ({"uniform": [0.01, 0.01]}, "empty range"),
        ({"loguniform": [0, 1e-3]}, "0 < low"),
        ({"choice": []}, "non-empty list"),
        ({"grid": []}, "non-empty list"),
        ({"normal": [0, 1]}, "expected one of"),
        ({"uniform": [1e-3]}, "[low, high]"),
        ({"uniform": ["a", 1]}, "not a finite number"),
    ],
)
def test_bad_distribution_is_one_clear_error(cfg, spec, words):
    with pytest.raises(ConfigError, match="train.lr") as e:
        parse_space({"train.lr": spec}, cfg)
    assert words in str(e.value)


def test_ranges_of_integer_keys_and_values_the_config_rejects(cfg, tmp_path):
    with pytest.raises(ConfigError, match="empty range"):
        parse_space({"train.batch_size": {"randint": [64, 64]}}, cfg)
    with pytest.raises(ConfigError, match="integer: use randint or choice"):
        parse_space({"train.batch_size": {"uniform": [32, 128]}}, cfg)
    with pytest.raises(ConfigError, match="train.eps"):  # 0 < eps < 1 fails at the high end
        parse_space({"train.eps": {"loguniform": [1e-5, 2.0]}}, cfg)
    with pytest.raises(ConfigError, match="train.batch_size"):  # randint's high is excluded
        parse_space({"train.batch_size": {"randint": [0, 8]}}, cfg)
    (tmp_path / "s.yaml").write_text("train.lr: {loguniform: [1e-4, 1e-2]}\n")  # '1e-4': a str
    (p,) = parse_space(tmp_path / "s.yaml", cfg)
    assert (p.kind, p.args) == ("loguniform", (1e-4, 1e-2))
    with pytest.raises(ConfigError, match="search space"):
        parse_space(tmp_path / "missing.yaml", cfg)


def test_default_spaces_of_toy_and_image_presets(cfg):
    toy = parse_space(default_space(cfg), cfg)
    assert {p.key for p in toy} == {"train.lr", "train.batch_size", "model.params.hidden"}
    lr = next(p for p in toy if p.key == "train.lr")
    assert lr.kind == "loguniform" and lr.args[0] < cfg.train.lr < lr.args[1]
    img = load_config("digits_vp")
    space = default_space(img)
    assert set(space) == {"train.lr", "train.batch_size", "model.params.channels", "train.eps"}
    base = img.model.params["channels"]
    assert list(base) in space["model.params.channels"]["choice"]
    assert [2 * c for c in base] in space["model.params.channels"]["choice"]
    parse_space(space, img)  # every choice and bound is a valid config


def test_bpd_needs_an_image_preset_that_computes_it(cfg, tmp_path):
    with pytest.raises(ConfigError, match="needs an image data set"):
        tune(cfg, metric="bpd", workdir=tmp_path)
    digits = load_config("digits_vp")  # bits/dim off: train.bpd_every = 0
    with pytest.raises(ConfigError, match="train.bpd_every"):
        tune(digits, metric="bpd", workdir=tmp_path)


def test_without_ray_one_line_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    assert main(["tune", "--config", "toy_mixture_vp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[tune]"' in err and INSTALL_HINT in err


def test_space_yaml_round_trip_is_finite(cfg):
    """Bounds read from YAML are floats, and a randint keeps integers."""
    space = yaml.safe_load("train.batch_size: {randint: [16, 129]}\ntrain.lr: {uniform: [1, 2]}")
    bs, lr = parse_space(space, cfg)
    assert bs.args == (16, 129) and all(isinstance(a, int) for a in bs.args)
    assert all(isinstance(a, float) and math.isfinite(a) for a in lr.args)


def test_search_plot_from_plain_rows(tmp_path):
    """One panel per key from plain dicts: numbers (log x), list values as categories, a
    stopped trial, a NaN metric and a crashed trial without one."""
    from PIL import Image

    rows = [
        {"status": "COMPLETED", "train.lr": 3e-3, "ch_mult": [8, 16], "eval_loss": 1.6},
        {"status": "STOPPED", "train.lr": 1e-5, "ch_mult": [16, 32], "eval_loss": 1.9},
        {"status": "COMPLETED", "train.lr": 1e-3, "ch_mult": [8, 16], "eval_loss": math.nan},
        {"status": "ERROR", "train.lr": 1e6, "ch_mult": [16, 32], "eval_loss": None},
    ]
    keys = ["train.lr", "ch_mult"]
    path = plot_search(rows, keys, "eval_loss", tmp_path / "tune.png", log_keys={"train.lr"})
    assert path == tmp_path / "tune.png"
    with Image.open(path) as im:
        assert im.size[0] > 2 * im.size[1] > 200  # two panels side by side
