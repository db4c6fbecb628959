"""Hyperparameter search with Ray Tune: ``scoresde tune``.

A search space maps dotted config keys (``train.lr``, ``train.batch_size``,
``model.params.channels``, ...) to a distribution, written in YAML as one of

- ``{loguniform: [low, high]}`` and ``{uniform: [low, high]}`` (float keys, ``low < high``),
- ``{randint: [low, high]}`` (integers ``low <= k < high``, Ray's convention),
- ``{choice: [v1, v2, ...]}`` (random choice) and ``{grid: [v1, v2, ...]}`` (every value; each
  of the ``trials`` samples repeats the whole grid, as in Ray).

Every key is checked against the :class:`~scoresde.training.config.Config` (and the network's
parameters for ``model.params.*``), and every bound or listed value is applied to the config,
before Ray starts. Each trial is a real :func:`~scoresde.training.loop.train` run in its own trial
folder that reports its test DSM loss (``eval_loss``) and, where training computes it, the test
bits/dim (``bpd``) to Tune at every evaluation; the ASHA scheduler, with the training step as its
time attribute, stops poor trials early. A trial that crashes (a NaN loss, say) is recorded by Ray
as ERROR and the search goes on.

Outputs in ``workdir``: ``results.csv`` (one row per trial), ``tune.png`` (the metric against
each parameter, drawn by :func:`~scoresde.viz.search.plot_search`), ``best.yaml`` (the best
trial's full config, ready for ``scoresde train --config best.yaml``) and ``ray/`` (Ray's
experiment folder with one folder per trial).

Ray is an optional extra (``pip install -e ".[tune]"``); it is imported only when a search runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..nets import NETS, coerce, net_params
from ..training.config import (
    SECTIONS,
    Config,
    ConfigError,
    _hints,
    apply_overrides,
    dump_yaml,
)
from ..viz.search import plot_search

__all__ = [
    "import_ray",
    "summary",
    "tune",
    "TuneError",
    "Param",
    "parse_space",
    "default_space",
    "config_with",
    "DISTRIBUTIONS",
    "METRICS",
    "SCHEDULERS",
    "STATUSES",
    "INSTALL_HINT",
]

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
# metric name in Tune and the table -> the key of the training loop's metrics it comes from
METRICS = {"eval_loss": "test_loss", "bpd": "test_bpd"}
SCHEDULERS = ("asha", "fifo")
# a trial's status in the table: ran to the end, stopped early by the scheduler, crashed
STATUSES = ("COMPLETED", "STOPPED", "ERROR")
INSTALL_HINT = 'Ray Tune is not installed; install the extra: pip install -e ".[tune]"'
Progress = Callable[[int, int, dict], None]  # progress(trials done, trials, latest values)


class TuneError(ValueError):
    """A search that cannot run or produced no usable trial."""


@dataclass(frozen=True)
class Param:
    """One searched config key: distribution ``kind`` (in ``DISTRIBUTIONS``) and its ``args``
    (``(low, high)`` for the ranges, the values for ``choice`` and ``grid``)."""

    key: str
    kind: str
    args: tuple


# ---- the search space ---------------------------------------------------------------------------
def _key_type(cfg: Config, key: str) -> Any:
    """The type hint of the dotted config ``key``; ConfigError listing the valid keys if unknown.

    The keys are those of ``--set`` overrides (:data:`SECTIONS`), and ``model.params.NAME`` for
    the parameters of the config's network."""
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"unknown section in search key {key!r}; valid: {', '.join(SECTIONS)}")
    if parts[:2] == ["model", "params"] and len(parts) == 3:
        spec = net_params(NETS[cfg.model.name])
        if parts[2] not in spec:
            valid = ", ".join(f"model.params.{k}" for k in spec)
            raise ConfigError(f"unknown search key {key!r} for {cfg.model.name!r}; valid: {valid}")
        return spec[parts[2]][0]
    hints = _hints(SECTIONS[parts[0]])
    if len(parts) != 2 or parts[1] not in hints:
        valid = ", ".join(f"{parts[0]}.{k}" for k in sorted(hints))
        raise ConfigError(f"unknown search key {key!r}; valid keys of {parts[0]}: {valid}")
    return hints[parts[1]]


def _is_int(hint: Any) -> bool:
    """Whether a type hint is ``int`` or ``int | None``."""
    return hint is int or (int in typing.get_args(hint) and float not in typing.get_args(hint))


def _plain(value: Any) -> Any:
    """A JSON-ready Python value (Ray may hand out numpy scalars)."""
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def _number(value: Any, key: str) -> float:
    """A bound read as the config reads a float (``1e-3`` is a string to PyYAML), and finite."""
    try:
        num = coerce(_plain(value), float, strings=True)  # numpy scalars as Python numbers
    except TypeError:
        num = math.nan
    if not math.isfinite(num):
        raise ConfigError(f"search key {key}: bound {value!r} is not a finite number")
    return num


def config_with(cfg: Config, values: dict[str, Any]) -> Config:
    """A new config with the dotted ``values`` applied (checked like ``--set`` overrides)."""
    sets = [f"{k}={json.dumps(_plain(v))}" for k, v in values.items()]
    return apply_overrides(cfg, sets)


def _parse_bounds(key: str, kind: str, args: Any, hint: Any) -> tuple:
    if not isinstance(args, list | tuple) or len(args) != 2:
        raise ConfigError(f"search key {key}: {kind} needs [low, high], got {args!r}")
    low, high = (_number(a, key) for a in args)
    if not low < high:
        raise ConfigError(f"search key {key}: empty range {kind} [{low:g}, {high:g}] (low >= high)")
    if kind == "randint":
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"search key {key}: randint needs integer bounds, got {args!r}")
        return int(low), int(high)
    if _is_int(hint):
        raise ConfigError(f"search key {key} is an integer: use randint or choice, not {kind}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"search key {key}: loguniform needs 0 < low, got {low:g}")
    return low, high


def _parse_param(cfg: Config, key: str, spec: Any) -> Param:
    """One ``key: {kind: args}`` entry, checked; every bound or value is tried on ``cfg``."""
    hint = _key_type(cfg, key)
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS):
        raise ConfigError(
            f"search key {key}: expected one of {{loguniform|uniform|randint: [low, high]}} or "
            f"{{choice|grid: [values]}}, got {spec!r}"
        )
    ((kind, args),) = spec.items()
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search key {key}: {kind} needs a non-empty list, got {args!r}")
        values = tuple(args)
    else:
        values = _parse_bounds(key, kind, args, hint)
    tried = (values[0], values[1] - 1) if kind == "randint" else values  # randint: high excluded
    for v in tried:
        config_with(cfg, {key: v})  # a ConfigError names the key, the value and what is valid
    return Param(key, kind, values)


def parse_space(space: dict | str | Path, cfg: Config) -> list[Param]:
    """The search space (a dict, or a YAML file of one) checked against ``cfg``.

    Raises:
        ConfigError: unreadable file, unknown key (the valid keys are listed), unknown
            distribution, empty range or choice, or a value the config rejects.
    """
    if not isinstance(space, dict):
        try:
            space = yaml.safe_load(Path(space).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read the search space {space}: {e}") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"a search space maps config keys to distributions, got {space!r}")
    return [_parse_param(cfg, str(k), v) for k, v in space.items()]


def _image_preset(cfg: Config) -> bool:
    from ..data import IMAGE_DATASETS

    return cfg.data.name in IMAGE_DATASETS


def _widths(base: list[int], keep_first: bool = False) -> dict:
    """``choice`` of the widths halved, as given, and doubled (a channel multiplier); the first
    entry stays as given with ``keep_first`` (``ch_mult``'s base level)."""
    k = int(keep_first)
    half = base[:k] + [max(1, c // 2) for c in base[k:]]
    return {"choice": [half, list(base), base[:k] + [2 * c for c in base[k:]]]}


def default_space(cfg: Config) -> dict:
    """The default search space of a config, as a plain dict (the YAML form).

    Every preset: ``train.lr`` log-uniform over [lr/10, 3 lr] (the presets sit near the
    largest stable rate) and ``train.batch_size`` in {b/2, b, 2b}. Image presets, as seed 000's
    search: the network's width (``unet_tutorial``: its four ``channels`` halved / doubled;
    ``ddpm``, ``ncsnpp``: ``ch_mult`` and ``num_res_blocks``) and ``train.eps``, log-uniform over
    [1e-5, 1e-3]. Toy presets: the MLP's ``hidden`` width in {h/2, h, 2h}.
    """
    tr, spec, params = cfg.train, net_params(NETS[cfg.model.name]), cfg.model.params
    b = tr.batch_size
    space: dict = {
        "train.lr": {"loguniform": [tr.lr / 10, 3 * tr.lr]},
        "train.batch_size": {"choice": sorted({max(1, b // 2), b, 2 * b})},
    }
    if "channels" in spec:
        space["model.params.channels"] = _widths(list(params.get("channels", spec["channels"][1])))
    if "ch_mult" in spec:
        mult = list(params.get("ch_mult", spec["ch_mult"][1]))
        space["model.params.ch_mult"] = _widths(mult, keep_first=True)
        n = int(params.get("num_res_blocks", spec["num_res_blocks"][1]))
        space["model.params.num_res_blocks"] = {"choice": sorted({max(1, n // 2), n, 2 * n})}
    if "hidden" in spec:
        h = int(params.get("hidden", spec["hidden"][1]))
        space["model.params.hidden"] = {"choice": sorted({max(1, h // 2), h, 2 * h})}
    if _image_preset(cfg):
        space["train.eps"] = {"loguniform": [1e-5, 1e-3]}
    return space


# ---- one trial (runs in a Ray worker) -----------------------------------------------------------
def _trial(values: dict, base: Config, metric: str, threads: int, env: dict) -> None:
    """Train ``base`` with the sampled ``values`` in this trial's folder; report at every
    evaluation that carries ``metric`` (its time attribute: the training step)."""
    from ray import tune as rt

    from ..training.loop import train

    os.environ.update(env)
    torch.set_num_threads(threads)
    cfg = config_with(base, values)
    reported = []

    def on_step(step: int, m: dict) -> None:
        if m.get("step") != step or METRICS[metric] not in m:
            return  # not an evaluation step, or one without this metric
        result = {name: m[k] for name, k in METRICS.items() if k in m}
        rt.report({"step": step, "train_loss": m["train_loss"], **result})
        reported.append(step)

    train(cfg, rt.get_context().get_trial_dir(), callback=on_step)
    if not reported:
        raise TuneError(
            f"--metric {metric}: training reported no {METRICS[metric]!r} (bits/dim come from "
            f"image data sets with train.bpd_every > 0); use --metric eval_loss"
        )


# ---- Ray ----------------------------------------------------------------------------------------
def import_ray():
    try:
        import ray
        from ray import tune as rt
    except ImportError:
        raise TuneError(INSTALL_HINT) from None
    return ray, rt


def _ray_space(rt, params: list[Param]) -> dict:
    """Ray's sampling objects for the parsed space."""
    table = {
        "loguniform": lambda a: rt.loguniform(*a),
        "uniform": lambda a: rt.uniform(*a),
        "randint": lambda a: rt.randint(*a),
        "choice": lambda a: rt.choice(list(a)),
        "grid": lambda a: rt.grid_search(list(a)),
    }
    return {p.key: table[p.kind](p.args) for p in params}


def _start_ray(ray, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start Ray here with this machine's cores;
    returns whether this call started it (and so should shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, TimeoutError) as e:
            raise TuneError(f"cannot reach a Ray cluster at {address!r}: {e}") from None
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=os.cpu_count(), **quiet)
    return True


@contextlib.contextmanager
def _quiet():
    """Tune without its console tables and per-trial tracebacks (the table and ``log`` say what
    happened; each crashed trial keeps its traceback in ``error.txt`` in its folder). Ray's
    warnings still show."""
    names = ("ray.tune.execution.tune_controller", "ray.tune.tune")  # the trial-error reports
    loggers = [logging.getLogger(n) for n in names]
    levels, env = [lg.level for lg in loggers], os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Ray's switch to its older reporter, silent at
    for lg in loggers:  # verbose=0 (the new one prints its tables at any verbosity)
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = env


def _scheduler(name: str, cfg: Config):
    """ASHA over the training step (first rung at the first evaluation), or FIFO (none)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "fifo":
        return FIFOScheduler()
    steps, every = cfg.train.steps, cfg.train.eval_every
    grace = every if 0 < every < steps else steps
    return ASHAScheduler(time_attr="step", max_t=max(steps, 1), grace_period=max(grace, 1))


class _Live:
    """A value kept out of the Tuner's pickled state (a live progress reporter holds a stream)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getstate__(self) -> dict:
        return {"value": None}


def _progress(rt, log: Callable[[str], None] | None, metric: str, progress: Progress | None):
    """A Tune callback that logs one line per finished trial and reports ``progress(done,
    total, latest)`` at every result and every finished trial."""
    finished, live = [0], _Live(progress)

    def report(trials, result: dict) -> None:
        if live.value is not None:
            latest = {"step": result.get("step"), metric: result.get(metric)}
            live.value(finished[0], len(trials), latest)

    class Callback(rt.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            report(trials, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r, finished[0] = trial.last_result or {}, finished[0] + 1
            if log is not None:
                log(f"trial {trial.trial_id}: step {r.get('step')}, "
                    f"{metric} {r.get(metric, 0):.5g}")  # fmt: skip
            report(trials, r)

        def on_trial_error(self, iteration, trials, trial, **info):
            step, finished[0] = (trial.last_result or {}).get("step"), finished[0] + 1
            when = f"after step {step}" if step else "before its first evaluation"
            if log is not None:
                log(f"trial {trial.trial_id}: ERROR {when} (traceback: {trial.path}/error.txt)")
            report(trials, trial.last_result or {})

    return Callback()


def _job(rt, cfg: Config, metric: str, cpus: float, gpus: float | None):
    """The trainable: :func:`_trial` on ``cfg`` without sample pictures or TensorBoard files,
    ``cpus`` torch threads (at least one) and its resources per trial (``gpus`` None: one GPU if
    ``train.device`` is CUDA, else none)."""
    quiet = config_with(cfg, {"train.sample_every": 0, "train.tensorboard": False})
    if gpus is None:
        gpus = 1.0 if cfg.train.device.startswith("cuda") else 0.0
    threads = max(1, int(cpus))
    job = rt.with_parameters(_trial, base=quiet, metric=metric, threads=threads, env=_env(cfg))
    return rt.with_resources(job, {"cpu": cpus, "gpu": gpus})


def _tune_config(rt, cfg: Config, metric: str, trials: int, scheduler: str, seed: int,
                 max_concurrent: int | None):  # fmt: skip
    """Minimize ``metric`` over ``trials`` samples of a seeded random search."""
    from ray.tune.search import BasicVariantGenerator

    search = BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0)
    return rt.TuneConfig(metric=metric, mode="min", num_samples=trials,
                         scheduler=_scheduler(scheduler, cfg), search_alg=search)  # fmt: skip


def _run_config(rt, out: Path, metric: str, log: Callable[[str], None] | None,
                progress: Progress | None = None):  # fmt: skip
    """Trial folders under ``out/ray``; a crashed trial is not retried and the search goes on."""
    watch = log is not None or progress is not None
    return rt.RunConfig(
        name="ray", storage_path=str(out), verbose=0,
        failure_config=rt.FailureConfig(max_failures=0, fail_fast=False),
        callbacks=[_progress(rt, log, metric, progress)] if watch else None,
    )  # fmt: skip


def _fit(ray, tuner, address: str | None):
    """``tuner.fit()`` on the cluster at ``address``, or on a Ray started here and shut down
    after; Tune's console output quiet."""
    started = _start_ray(ray, address)
    try:
        with _quiet():
            return tuner.fit()
    finally:
        if started:
            ray.shutdown()


def _env(cfg: Config) -> dict[str, str]:
    """``$SCORESDE_DATA`` for the workers: the data roots seen from here, absolute."""
    from ..data import ENV_VAR, data_roots

    return {ENV_VAR: os.pathsep.join(str(p.resolve()) for p in data_roots(cfg.data.data_dir))}


def _absolute(cfg: Config) -> Config:
    """Data paths made absolute: trials run in their own folders."""
    sets = {}
    for k in ("path", "data_dir"):
        v = getattr(cfg.data, k)
        if v is not None:
            sets[f"data.{k}"] = str(Path(v).expanduser().resolve())
    return config_with(cfg, sets) if sets else cfg


# ---- results ------------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    """A table cell: lists as JSON text, numbers as they are."""
    value = _plain(value)
    return json.dumps(value) if isinstance(value, list | dict) else value


def _rows(grid, params: list[Param], steps: int) -> list[dict]:
    """One row per trial: status (COMPLETED, STOPPED early by the scheduler, ERROR), the last
    reported step and metrics, the parameters, the error's last line (the exception) and the
    trial folder."""
    rows = []
    for r in grid:
        m, path = r.metrics or {}, Path(r.path)
        step = m.get("step")
        status = "ERROR" if r.error else "COMPLETED" if step == steps else "STOPPED"
        error = str(r.error).strip().splitlines()[-1] if r.error else ""
        row = {"trial": m.get("trial_id") or path.name, "status": status, "step": step}
        row["time"] = m.get("time_total_s")
        row |= {p.key: _plain(r.config.get(p.key)) for p in params}
        row |= {name: m.get(name) for name in (*METRICS, "train_loss")}
        rows.append(row | {"error": error[:300], "dir": str(path)})
    return rows


def _write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows({k: "" if v is None else _cell(v) for k, v in row.items()} for row in rows)
    return path


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _best(rows: list[dict], metric: str) -> dict | None:
    """The row with the lowest final ``metric`` among the trials that did not crash."""
    ok = [r for r in rows if r["status"] != "ERROR" and _finite(r[metric])]
    return min(ok, key=lambda r: r[metric]) if ok else None


def _write_best(cfg: Config, row: dict, params: list[Param], metric: str, path: Path) -> Config:
    """``best.yaml``: the search's config with the best trial's values, full and resolved."""
    best = config_with(cfg, {p.key: row[p.key] for p in params})
    head = f"# best trial {row['trial']} of scoresde tune: {metric} = {row[metric]:.6g}\n"
    path.write_text(head + dump_yaml(best))
    return best


# ---- the search ---------------------------------------------------------------------------------
def _check_args(cfg: Config, trials: int, scheduler: str, metric: str, cpus: float) -> None:
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if metric == "bpd" and not _image_preset(cfg):
        raise ConfigError(f"--metric bpd needs an image data set, not {cfg.data.name!r}")
    if metric == "bpd" and cfg.train.bpd_every == 0:
        raise ConfigError(
            "--metric bpd: this config computes no test bits/dim (train.bpd_every is 0); add "
            "--set train.bpd_every=N with N a multiple of train.eval_every"
        )
    if trials < 1 or not cpus > 0:
        raise ConfigError(f"need trials >= 1 and cpus per trial > 0, got {trials}, {cpus}")


def tune(
    cfg: Config,
    space: dict | str | Path | None = None,
    trials: int = 8,
    scheduler: str = "asha",
    metric: str = "eval_loss",
    address: str | None = None,
    workdir: str | Path = "runs/tune",
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    seed: int = 0,
    max_concurrent: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Search hyperparameters of ``cfg`` with Ray Tune; write results.csv, tune.png, best.yaml.

    Args:
        cfg: the base configuration; every trial trains it with its sampled values.
        space: dict or YAML file of ``key: {distribution: args}`` (module docstring); None:
            :func:`default_space`.
        trials: Ray's ``num_samples`` (a ``grid`` entry multiplies it by the grid's size).
        scheduler: ``asha`` (early stopping over the training step) or ``fifo``.
        metric: ``eval_loss`` (test DSM loss of the EMA model) or ``bpd`` (test bits/dim, image
            data sets), minimized.
        address: a Ray cluster (``auto`` or ``HOST:PORT``); None starts Ray here on all cores.
        workdir: output folder (created); Ray's trial folders go to ``workdir/ray``.
        cpus_per_trial, gpus_per_trial: resources per trial (GPUs: one if ``train.device`` is
            CUDA, else none, when None); the trial uses ``cpus_per_trial`` torch threads.
        seed: seed of Ray's random search.
        max_concurrent: at most this many trials at once (None: as the resources allow).
        log: called with one line per finished trial.
        progress: called as ``progress(done, total, latest)`` at every reported result and
            finished trial: trials finished, trials in the search, the latest ``step`` and
            ``metric``.

    Returns:
        ``{"best": best row, "best_config": Config, "rows": [...], "results", "plot",
        "best_yaml": paths}``.

    Raises:
        ConfigError: bad space, scheduler, metric or resources (before Ray starts).
        TuneError: Ray is not installed, or no trial finished (the table is still written).
    """
    params = parse_space(default_space(cfg) if space is None else space, cfg)
    _check_args(cfg, trials, scheduler, metric, cpus_per_trial)
    ray, rt = import_ray()
    out = Path(workdir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = _absolute(cfg)
    tuner = rt.Tuner(
        _job(rt, cfg, metric, cpus_per_trial, gpus_per_trial),
        param_space=_ray_space(rt, params),
        tune_config=_tune_config(rt, cfg, metric, trials, scheduler, seed, max_concurrent),
        run_config=_run_config(rt, out, metric, log, progress),
    )
    return _finish(cfg, _fit(ray, tuner, address), params, metric, out)


def _finish(cfg: Config, grid, params: list[Param], metric: str, out: Path) -> dict:
    """Write the table and the plot; the best config if any trial finished."""
    rows = _rows(grid, params, cfg.train.steps)
    result = {"rows": rows, "results": _write_csv(rows, out / "results.csv")}
    logs = {p.key for p in params if p.kind == "loguniform"}  # log x for log-uniform keys
    result["plot"] = plot_search(rows, [p.key for p in params], metric, out / "tune.png", logs)
    best = _best(rows, metric)
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        raise TuneError(f"no trial finished; first error: {errors[0] if errors else 'none'}")
    result["best_yaml"] = out / "best.yaml"
    result["best_config"] = _write_best(cfg, best, params, metric, result["best_yaml"])
    return result | {"best": best}


# ---- command line -------------------------------------------------------------------------------
def summary(result: dict, metric: str) -> list[str]:
    """What ``scoresde tune`` prints: the trials by status, the best one, the files written."""
    best, rows = result["best"], result["rows"]
    counts = {s: sum(row["status"] == s for row in rows) for s in STATUSES}
    shown = ", ".join(  # the config keys
        f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}"
        for k in best
        if "." in k
    )
    return [
        f"{len(rows)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()),
        f"best: trial {best['trial']}, {metric} = {best[metric]:.5g} ({shown})",
        f"wrote {result['results']}, {result['plot']}, {result['best_yaml']}",
    ]
