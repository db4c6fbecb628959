"""User errors end with exit code 2 and one line on stderr (README): no traceback, no file written
or destroyed.

One parametrized test per class of mistake (files and devices, numbers, data, models, configs,
names). Each case is a function ``case(tmp, run, monkeypatch) -> (argv, needle)``: it may write
its inputs under ``tmp`` and patch what it needs (a full disk, a read-only folder, a score that
turns NaN); every file under ``tmp`` and in the trained run is then compared before and after.
Everything runs in process on one tiny toy run trained once for the module.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TESTDATA, require

from scoresde.app.cli import main
from scoresde.core.score import ScoreModel
from scoresde.samplers import SAMPLERS, sampler_options
from scoresde.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from scoresde.training.config import MAX_YAML_ALIASES

TINY = [
    "train.steps=2", "train.batch_size=16", "data.n_train=64", "data.n_test=32",
    "model.params.hidden=8", "train.tensorboard=false", "train.eval_every=0",
    "train.log_every=1", "train.ckpt_every=0",
]  # fmt: skip
SETS = [a for s in TINY for a in ("--set", s)]
PRESET = "toy_mixture_vp"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained 2-D toy run (2 steps): every verb can read it."""
    wd = tmp_path_factory.mktemp("user_errors") / "run"
    assert main(["train", "--quiet", "--config", PRESET, "--workdir", str(wd), *SETS]) == 0
    return wd


def _files(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders`` with its bytes (what an error must leave as it was)."""
    out = {}
    for folder in folders:
        if folder.exists():
            out |= {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return out


def _refused(case, tmp: Path, run: Path, monkeypatch, capsys) -> str:
    """Run ``case``; assert exit code 2, one stderr line holding its needle, no traceback and
    no file written or destroyed; return the line."""
    argv, needle = case(tmp, run, monkeypatch)
    before = _files(tmp, run)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: its errors exit from the parser
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("scoresde") and needle.lower() in lines[0].lower(), lines[0]
    assert _files(tmp, run) == before, "a file was written or destroyed"
    return lines[0]


def _ids(cases: dict) -> list:
    return [pytest.param(f, id=k) for k, f in cases.items()]


def _train(tmp: Path, *more: str) -> list[str]:
    """A tiny toy ``train`` into ``tmp/w`` (which must stay absent)."""
    return ["train", "--quiet", "--config", PRESET, "--workdir", str(tmp / "w"), *SETS, *more]


def _sample(run: Path, tmp: Path, *more: str) -> list[str]:
    return ["sample", "--quiet", "--workdir", str(run), "--n", "4", "--device", "cpu",
            "--out", str(tmp / "s.npy"), *more]  # fmt: skip


def _likelihood(run: Path, tmp: Path, *more: str) -> list[str]:
    return ["likelihood", "--quiet", "--workdir", str(run), "--device", "cpu", "--rtol", "1e-2",
            "--atol", "1e-2", "--out", str(tmp / "ll.json"), *more]  # fmt: skip


def _save(tmp: Path, name: str, array) -> str:
    np.save(tmp / name, array)
    return str(tmp / name)


def _variant(tmp: Path, run: Path, change) -> Path:
    """A copy of the run's checkpoint changed by ``change(state)``, in ``tmp/ckpt``."""
    state = copy.deepcopy(load_checkpoint(run))
    change(state)
    save_checkpoint(tmp / "ckpt" / "checkpoint.pt", state)
    return tmp / "ckpt"


# ---- files and devices ------------------------------------------------------------------------
def _read_only(tmp: Path, monkeypatch) -> Path:
    """A folder that nothing can be created in, also for root (``os.open``/``os.mkdir`` refuse)."""
    ro = tmp / "ro"
    ro.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def denied(path) -> bool:
        return str(path).startswith(str(ro))

    def fake_open(path, flags, *a, **k):
        if denied(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if denied(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return ro


def _full_disk(monkeypatch, at: str = "fsync") -> None:
    """Writes fail with ENOSPC (at the fsync of an atomic write, or in ``torch.save``)."""

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os if at == "fsync" else torch, "fsync" if at == "fsync" else "save", full)


def _no_cuda(needle: str):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return needle


def _no_mps(needle: str):
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("this machine has MPS")
    return needle


def _latin1(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_bytes(text.encode("latin-1"))
    return str(tmp / name)


def _ll_json_on_full_disk(tmp, run, mp):
    (tmp / "ll.json").write_text('{"old": true}\n')  # the old result is kept
    _full_disk(mp)
    return _likelihood(run, tmp, "--n", "4"), "No space left on device"


def _convert_on_full_disk(tmp, run, mp):
    ckpt = require(TESTDATA / "vp_ddpmpp_continuous_small.pth")
    cfg = TESTDATA / "vp_ddpmpp_continuous_small_config.json"
    _full_disk(mp, at="save")
    argv = ["convert", "--official", str(ckpt), "--config", str(cfg), "--out", str(tmp / "c")]
    return argv, "No space left on device"


FILES_AND_DEVICES = {
    "workdir_is_a_file": lambda tmp, run, mp: (
        (tmp / "f").write_text("x"),
        (
            ["train", "--quiet", "--config", PRESET, "--workdir", str(tmp / "f"), *SETS],
            "f: it exists",
        ),
    )[1],
    "workdir_read_only": lambda tmp, run, mp: (
        _train(tmp)[:5] + [str(_read_only(tmp, mp) / "w"), *SETS],
        "Permission denied",
    ),
    "likelihood_json_enospc": _ll_json_on_full_disk,
    "convert_enospc": _convert_on_full_disk,
    "config_is_a_folder": lambda tmp, run, mp: (
        ["train", "--config", str(tmp), "--dry-run"],
        "is a folder",
    ),
    "yaml_not_utf8": lambda tmp, run, mp: (
        [
            "train",
            "--config",
            _latin1(tmp, "c.yaml", "# caf\xe9\ntrain: {steps: 2}\n"),
            "--dry-run",
        ],
        "c.yaml: not UTF-8",
    ),
    "csv_not_utf8": lambda tmp, run, mp: (
        _train(tmp, "--data", _latin1(tmp, "d.csv", "1,2\n3,4\xe9\n")),
        "d.csv",
    ),
    "train_device_cuda_missing": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.device=cuda"),
        _no_cuda("no CUDA GPU"),
    ),
    "train_device_mps_missing": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.device=mps"),
        _no_mps("MPS is not available"),
    ),
    "sample_device_cuda_missing": lambda tmp, run, mp: (
        _sample(run, tmp) + ["--device", "cuda:1"],
        _no_cuda("no CUDA GPU"),
    ),
    "device_gpu_unknown": lambda tmp, run, mp: (_train(tmp, "--device", "gpu"), "valid: cpu"),
    "sample_device_unknown": lambda tmp, run, mp: (_sample(run, tmp, "--device", "tpu"), "tpu"),
    "set_train_device_tpu": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.device=tpu"),
        "unknown train.device 'tpu'",
    ),
}


@pytest.mark.parametrize("case", _ids(FILES_AND_DEVICES))
def test_files_and_devices(case, tmp_path, run, monkeypatch, capsys):
    _refused(case, tmp_path, run, monkeypatch, capsys)


@pytest.mark.parametrize(
    "argv",
    [["info", "--quiet", "--workdir", "RUN"], ["train", "--list"],
     ["train", "--config", PRESET, "--dry-run", "--workdir", "TMP"]],
    ids=["info", "train_list", "dry_run"],
)  # fmt: skip
def test_a_closed_stdout_pipe_ends_quietly(argv, run, tmp_path, monkeypatch, capsys):
    """``scoresde ... | head``: the reader went away; no BrokenPipeError trace, exit 141."""

    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    argv = [{"RUN": str(run), "TMP": str(tmp_path / "w")}.get(a, a) for a in argv]
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(argv) == 141
    assert capsys.readouterr().err == ""


# ---- numbers ----------------------------------------------------------------------------------
NUMBERS = {
    "sample_n_0": lambda tmp, run, mp: (_sample(run, tmp, "--n", "0"), "--n"),
    "sample_n_negative": lambda tmp, run, mp: (_sample(run, tmp, "--n", "-3"), ">= 1"),
    "sample_chunk_0": lambda tmp, run, mp: (_sample(run, tmp, "--chunk", "0"), "--chunk"),
    "sample_steps_0": lambda tmp, run, mp: (_sample(run, tmp, "--steps", "0"), "--steps"),
    "sample_rtol_negative": lambda tmp, run, mp: (
        _sample(run, tmp, "--sampler", "ode", "--rtol", "-1"),
        "--rtol: must be a number >= 0",
    ),
    "likelihood_rtol_negative": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--rtol", "-1"),
        "rtol",
    ),
    "likelihood_atol_negative": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--atol", "-1"),
        "atol",
    ),
    "likelihood_n_0": lambda tmp, run, mp: (_likelihood(run, tmp, "--n", "0"), "--n"),
    "likelihood_batch_size_0": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--batch-size", "0"),
        "--batch-size",
    ),
    "likelihood_repeats_0": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--repeats", "0"),
        "--repeats",
    ),
    "likelihood_seed_overflow": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--seed", str(2**70)),
        "--seed: must be an integer in [0, 2**63)",
    ),
    "train_seed_overflow": lambda tmp, run, mp: (
        _train(tmp, "--set", f"train.seed={2**70}"),
        "train.seed",
    ),
    "train_steps_negative": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.steps=-1"),
        "train.steps",
    ),
    "train_batch_size_0": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.batch_size=0"),
        "train.batch_size",
    ),
    "bpd_every_negative": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.bpd_every=-1"),
        "bpd_every",
    ),
    "bpd_n_0": lambda tmp, run, mp: (_train(tmp, "--set", "train.bpd_n=0"), "train.bpd_n"),
    "lr_overflows_float": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.lr=" + "9" * 400),
        "train.lr",
    ),
    "demo_steps_0": lambda tmp, run, mp: (
        ["demo", "--steps", "0", "--out", str(tmp / "d")],
        "--steps",
    ),
    "demo_n_0": lambda tmp, run, mp: (["demo", "--n", "0", "--out", str(tmp / "d")], "--n"),
    "threads_0": lambda tmp, run, mp: (_train(tmp, "--threads", "0"), "--threads"),
}


@pytest.mark.parametrize("case", _ids(NUMBERS))
def test_numbers_below_their_minimum_or_overflowing(case, tmp_path, run, monkeypatch, capsys):
    _refused(case, tmp_path, run, monkeypatch, capsys)


def test_likelihood_n_larger_than_the_split_says_what_was_used(run, tmp_path, capsys):
    out = tmp_path / "ll.json"
    assert main(_likelihood(run, tmp_path, "--n", "100000")) == 0
    err = capsys.readouterr().err
    assert "--n 100000" in err and "using all 32" in err and "Traceback" not in err
    assert json.loads(out.read_text())["n"] == 32


# ---- data -------------------------------------------------------------------------------------
def _stored_standardizer_of_another_shape(tmp, run, mp):
    wd = _variant(tmp, run, lambda s: s.update(standardizer={"mean": torch.zeros(3),
                                                             "std": torch.ones(3)}))  # fmt: skip
    return _sample(wd, tmp), "standardizer has shape (3,)"


def _empty_folder(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


DATA = {
    "likelihood_1d_array_on_2d_model": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--data", _save(tmp, "a.npy", np.zeros(50, "f4"))),
        "shape (1,) but the model takes (2,)",
    ),
    "likelihood_3d_points_on_2d_model": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--data", _save(tmp, "a.npy", np.zeros((50, 3), "f4"))),
        "shape (3,) but the model takes (2,)",
    ),
    "standardizer_of_another_shape": _stored_standardizer_of_another_shape,
    "complex_array_train": lambda tmp, run, mp: (
        _train(tmp, "--data", _save(tmp, "c.npy", np.ones((50, 2), "c8"))),
        "complex",
    ),
    "complex_array_likelihood": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--data", _save(tmp, "c.npy", np.ones((50, 2), "c8"))),
        "c.npy: complex",
    ),
    "values_overflow_float32": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--data", _save(tmp, "big.npy", np.full((50, 2), 1e300))),
        "big.npy: values overflow",
    ),
    "empty_image_folder": lambda tmp, run, mp: (
        [
            "train",
            "--quiet",
            "--config",
            "digits_vp",
            "--data",
            _empty_folder(tmp),
            "--workdir",
            str(tmp / "w"),
            "--set",
            "train.steps=2",
        ],
        "no PNG/JPEG images",
    ),  # fmt: skip
    "one_row": lambda tmp, run, mp: (
        _train(tmp, "--data", _save(tmp, "one.npy", np.zeros((1, 2)))),
        "at least 2 rows",
    ),
    "one_training_row_after_the_split": lambda tmp, run, mp: (
        _train(
            tmp,
            "--data",
            _save(tmp, "three.npy", np.random.randn(3, 2)),
            "--set",
            "data.test_fraction=0.5",
        ),
        "the training split has 1 row",
    ),  # fmt: skip
    "toy_set_of_one_row": lambda tmp, run, mp: (
        _train(tmp, "--set", "data.n_train=1"),
        "training split has 1 row",
    ),
    "missing_data_file_train": lambda tmp, run, mp: (
        _train(tmp, "--data", str(tmp / "gone.npy")),
        "gone.npy: no such data file",
    ),
    "missing_data_file_likelihood": lambda tmp, run, mp: (
        _likelihood(run, tmp, "--data", str(tmp / "gone.npy")),
        "gone.npy: no such data file",
    ),
    "missing_data_folder": lambda tmp, run, mp: (
        _train(tmp, "--data", str(tmp / "gone")),
        "gone: no such data file or folder",
    ),
    "missing_run_folder": lambda tmp, run, mp: (_sample(tmp / "nothing", tmp), "no checkpoint at"),
}


@pytest.mark.parametrize("case", _ids(DATA))
def test_data_that_do_not_fit(case, tmp_path, run, monkeypatch, capsys):
    _refused(case, tmp_path, run, monkeypatch, capsys)


# ---- models -----------------------------------------------------------------------------------
def _nan_after(mp, calls: int, bad: float = float("nan")) -> None:
    """The model's score turns ``bad`` after ``calls`` evaluations."""
    real, seen = ScoreModel.forward, [0]

    def forward(self, x, t):
        seen[0] += 1
        s = real(self, x, t)
        return s * bad if seen[0] > calls else s

    mp.setattr(ScoreModel, "forward", forward)
    mp.setattr(ScoreModel, "score_fn", forward)


def _sampler_with_nan(name: str):
    def case(tmp, run, mp):
        _nan_after(mp, 3, float("inf") if name == "ode" else float("nan"))
        steps = ["--steps", "30"] if "steps" in sampler_options(name) else []
        return _sample(run, tmp, "--sampler", name, *steps), "NaN or inf"

    return case


def _official(tmp: Path) -> Path:
    ckpt = require(TESTDATA / "vp_ddpmpp_continuous_small.pth")
    cfg = TESTDATA / "vp_ddpmpp_continuous_small_config.json"
    out = tmp / "conv"
    assert main(["convert", "--official", str(ckpt), "--config", str(cfg), "--out", str(out)]) == 0
    return out


def _python_objects(tmp, run, mp):
    torch.save({"model": {"w": torch.zeros(2)}, "thing": Path("x")}, tmp / "objects.pth")
    cfg = require(TESTDATA / "vp_ddpmpp_continuous_small_config.json")
    argv = ["convert", "--official", str(tmp / "objects.pth"), "--config", str(cfg),
            "--out", str(tmp / "out")]  # fmt: skip
    return argv, "refused: holds Python objects"


def _resume(change, needle: str):
    def case(tmp, run, mp):
        wd = _variant(tmp, run, change)
        return [
            "train",
            "--quiet",
            "--resume",
            "--workdir",
            str(wd),
            "--set",
            "train.steps=4",
        ], needle

    return case


def _pop(*keys: str):
    def change(state: dict) -> None:
        d = state
        for k in keys[:-1]:
            d = d[k]
        d.pop(keys[-1])

    return change


def _config_entry(section: str, value) -> object:
    return lambda s: s["config"].__setitem__(section, value)


MODELS = {
    **{f"nan_score_{name}": _sampler_with_nan(name) for name in SAMPLERS},
    "nan_score_likelihood": lambda tmp, run, mp: (
        _nan_after(mp, 5),
        (_likelihood(run, tmp, "--n", "4"), "NaN or inf"),
    )[1],
    "resume_without_ema": _resume(_pop("ema"), "no EMA state"),
    "resume_without_rng": _resume(_pop("rng"), "no RNG state"),
    "resume_without_ema_params": _resume(_pop("ema", "params"), "ema entry has no 'params'"),
    "sample_without_ema_params": lambda tmp, run, mp: (
        _sample(_variant(tmp, run, _pop("ema", "params")), tmp),
        "ema entry has no 'params'",
    ),
    "config_section_not_a_mapping": lambda tmp, run, mp: (
        _sample(_variant(tmp, run, _config_entry("sde", [1, 2])), tmp),
        "section 'sde'",
    ),
    "config_model_name_unknown": lambda tmp, run, mp: (
        [
            "info",
            "--workdir",
            str(_variant(tmp, run, lambda s: s["config"]["model"].update(name="x"))),
        ],
        "model.name",
    ),
    "config_data_shape_malformed": lambda tmp, run, mp: (
        _sample(_variant(tmp, run, lambda s: s["config"]["data"].update(shape="abc")), tmp),
        "data.shape",
    ),
    "config_not_a_mapping": lambda tmp, run, mp: (
        _sample(_variant(tmp, run, lambda s: s.update(config="junk")), tmp),
        "config is a str",
    ),
    "official_pickle_with_python_objects": _python_objects,
    "converted_official_without_data": lambda tmp, run, mp: (
        _likelihood(_official(tmp), tmp),
        "give --data",
    ),
}


@pytest.mark.parametrize("case", _ids(MODELS))
def test_models_and_checkpoints(case, tmp_path, run, monkeypatch, capsys):
    _refused(case, tmp_path, run, monkeypatch, capsys)


def test_ncsnpp_checkpoint_with_the_former_combine_name_loads(tmp_path):
    """Before the rename, ``Combine`` held its 1x1 convolution as ``Conv``: such a checkpoint of
    this library still loads, into the same weights and EMA weights."""
    from scoresde.nets.layers import Combine
    from scoresde.training.config import build_score_model, config_from_dict, config_to_dict

    params = dict(
        nf=8,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[4],
        image_size=8,
        num_channels=1,
        progressive_input="input_skip",
        progressive_combine="cat",
    )
    model_cfg = {"name": "ncsnpp", "parameterization": "score", "label": "sigma", "params": params}
    cfg = config_from_dict({"sde": {"name": "vesde"}, "model": model_cfg,
                            "data": {"name": "mnist", "shape": [1, 8, 8]}})  # fmt: skip
    model = build_score_model(cfg)
    combines = [name for name, m in model.named_modules() if isinstance(m, Combine)]
    assert combines

    def former(state: dict) -> dict:
        old = {f"{c}.Conv_0.{w}": f"{c}.Conv.{w}" for c in combines for w in ("weight", "bias")}
        return {old.get(k, k): v.clone() for k, v in state.items()}

    weights = {k: v.clone() for k, v in model.state_dict().items()}
    shadow = {k: v + 1 for k, v in model.named_parameters() if v.requires_grad}
    ema = {"rate": 0.999, "num_updates": 1, "params": former(shadow)}
    state = {"config": config_to_dict(cfg), "model": former(weights), "ema": ema, "step": 1}
    assert any(".Conv." in k for k in state["model"])
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    raw, _, _ = load_model(tmp_path, ema=False)
    averaged, _, _ = load_model(tmp_path, ema=True)
    for k, v in raw.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for k, v in averaged.named_parameters():
        assert torch.equal(v, shadow.get(k, weights[k])), k


# ---- configs ----------------------------------------------------------------------------------
def _alias_bomb(levels: int = 15) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _bomb_override() -> str:
    refs = ", ".join(["*a"] * (MAX_YAML_ALIASES + 1))
    return f"model.params.hidden={{a: &a [1, 2], b: [{refs}]}}"


CONFIGS = {
    "yaml_alias_bomb": lambda tmp, run, mp: (
        ["train", "--config", _write(tmp, "bomb.yaml", _alias_bomb()), "--dry-run"],
        f"more than {MAX_YAML_ALIASES} aliases",
    ),
    "yaml_alias_bomb_in_set": lambda tmp, run, mp: (
        _train(tmp, "--set", _bomb_override(), "--dry-run"),
        "aliases",
    ),
    "yaml_too_large": lambda tmp, run, mp: (
        ["train", "--config", _write(tmp, "big.yaml", "#" + "x" * (2 << 20)), "--dry-run"],
        "larger than",
    ),
    "long_value_is_cut": lambda tmp, run, mp: (
        _train(tmp, "--set", "sde.name=" + "x" * 500),
        "...",
    ),
    "long_param_value_is_cut": lambda tmp, run, mp: (
        _train(tmp, "--set", "model.params.hidden=" + "y" * 500),
        "...",
    ),
    "dry_run_checks_the_device": lambda tmp, run, mp: (
        _train(tmp, "--set", "train.device=cuda:7", "--dry-run"),
        _no_cuda("cuda"),
    ),
    "dry_run_reads_the_data": lambda tmp, run, mp: (
        _train(tmp, "--data", _save(tmp, "c.npy", np.ones((50, 2), "c8")), "--dry-run"),
        "complex",
    ),
    "dry_run_checks_the_sampler": lambda tmp, run, mp: (
        _train(
            tmp,
            "--set",
            "train.sample_every=1",
            "--set",
            "sample.sampler=pc",
            "--set",
            "sample.steps=10",
            "--dry-run",
        ),
        "cannot run",
    ),
    "dry_run_refuses_a_workdir_holding_a_run": lambda tmp, run, mp: (
        ["train", "--config", PRESET, "--workdir", str(run), "--dry-run"],
        "already holds",
    ),
    "argparse_missing_required": lambda tmp, run, mp: (
        ["sample", "--workdir", str(run)],
        "scoresde sample: error: the following arguments are required: --out",
    ),
    "argparse_not_an_int": lambda tmp, run, mp: (_sample(run, tmp, "--n", "abc"), "'abc'"),
    "argparse_unknown_option": lambda tmp, run, mp: (_sample(run, tmp, "--bogus"), "--bogus"),
    "argparse_unknown_verb": lambda tmp, run, mp: (["trian"], "did you mean 'train'?"),
}


@pytest.mark.parametrize("case", _ids(CONFIGS))
def test_configs_and_arguments(case, tmp_path, run, monkeypatch, capsys):
    line = _refused(case, tmp_path, run, monkeypatch, capsys)
    assert len(line) < 1200 and "x" * 100 not in line and "y" * 100 not in line


# ---- names: valid ones listed, "did you mean" -------------------------------------------------
def _set(key: str, value: str, needle: str):
    return lambda tmp, run, mp: (_train(tmp, "--set", f"{key}={value}", "--dry-run"), needle)


NAMES = {
    "sampler": (lambda tmp, run, mp: (_sample(run, tmp, "--sampler", "pcc"), "sampler"), "pc"),
    "predictor": (lambda tmp, run, mp: (_sample(run, tmp, "--predictor", "ancestrl"), "predictor"),
                  "ancestral"),
    "corrector": (lambda tmp, run, mp: (_sample(run, tmp, "--corrector", "langvin"), "corrector"),
                  "langevin"),
    "ode_method": (lambda tmp, run, mp: (_sample(run, tmp, "--sampler", "ode", "--method",
                                                 "rk5", "--steps", "4"), "method"), "rk4"),
    "preset": (lambda tmp, run, mp: (["train", "--config", "toy_mixture_v", "--dry-run"], "preset"),
               "toy_mixture_vp"),
    "sde": (_set("sde.name", "vpsd", "sde.name"), "vpsde"),
    "network": (_set("model.name", "mlpp", "model.name"), "mlp"),
    "network_param": (_set("model.params.hiden", "3", "model.params"), "hidden"),
    "data_set": (_set("data.name", "swissrol", "data.name"), "swissroll"),
    "parameterization": (_set("model.parameterization", "nois", "parameterization"), "noise"),
    "config_key": (_set("train.stepz", "3", "train.stepz"), "train.steps"),
    "config_section": (_set("trian.steps", "3", "section 'trian'"), "train"),
    "sample_sampler": (_set("sample.sampler", "dpm_solvr", "sample.sampler"), "dpm_solver"),
    "divergence": (lambda tmp, run, mp: (_likelihood(run, tmp, "--divergence", "exakt"),
                                         "divergence"), "exact"),
    "device": (lambda tmp, run, mp: (_sample(run, tmp, "--device", "cpuu"), "device"), "cpu"),
    "tune_scheduler": (lambda tmp, run, mp: (["tune", "--config", PRESET, "--scheduler", "ashaa"],
                                             "scheduler"), "asha"),
}  # fmt: skip


@pytest.mark.parametrize("case, suggestion", [pytest.param(*v, id=k) for k, v in NAMES.items()])
def test_misspelled_names_get_did_you_mean(case, suggestion, tmp_path, run, monkeypatch, capsys):
    line = _refused(case, tmp_path, run, monkeypatch, capsys)
    assert f"did you mean '{suggestion}'?" in line and "valid" in line, line
