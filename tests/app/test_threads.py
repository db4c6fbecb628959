"""Thread choice (``--threads``, ``$SCORESDE_THREADS``, the default) and the command line's
conventions: the header line, ``--version``, ``train --list``, help text and defaults."""

from __future__ import annotations

import argparse

import pytest
import torch

import scoresde.training.loop as loop
from scoresde.app import cli
from scoresde.app.cli import build_parser, main
from scoresde.app.threads import ENV_VAR, default_threads, resolve_threads
from scoresde.training.config import list_presets


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def seen(monkeypatch) -> list[int]:
    """Replace training by a stub that records torch's thread count inside the run."""
    threads: list[int] = []

    def fake_train(cfg, workdir, callback=None, **kwargs):
        threads.append(torch.get_num_threads())
        if callback is not None:
            callback(1, {"train_loss": 0.5})
        return {"step": 1}

    monkeypatch.setattr(loop, "train", fake_train)
    return threads


def _train(tmp_path, *extra: str) -> int:
    return main(["train", "--config", "toy_swissroll_vp", "--workdir", str(tmp_path), *extra])


def test_default_is_one_thread_for_small_models(seen, tmp_path, capsys):
    assert _train(tmp_path) == 0
    assert seen == [1]
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("scoresde train: 1 torch thread (default: fastest for this package")
    assert "--threads N" in first and ENV_VAR in first


def test_threads_flag(seen, tmp_path, capsys):
    assert _train(tmp_path, "--threads", "2") == 0
    assert seen == [2]
    assert (
        capsys.readouterr()
        .err.splitlines()[0]
        .startswith("scoresde train: 2 torch threads (--threads;")
    )


def test_environment_variable_and_flag_precedence(seen, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "2")
    assert _train(tmp_path) == 0
    assert (
        capsys.readouterr()
        .err.splitlines()[0]
        .startswith(f"scoresde train: 2 torch threads ({ENV_VAR};")
    )
    assert _train(tmp_path, "--threads", "1") == 0  # the flag wins
    assert seen == [2, 1]


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_bad_thread_counts_are_one_line_errors(bad, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_VAR, bad)
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ENV_VAR in err[0] and bad in err[0]


def test_resolve_threads():
    assert resolve_threads(3, {ENV_VAR: "2"}) == (3, "--threads")
    assert resolve_threads(None, {ENV_VAR: " 2 "}) == (2, ENV_VAR)
    n, source = resolve_threads(None, {})
    assert n == default_threads() == 1 and source.startswith("default")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip().startswith("scoresde 0.")


def test_train_list(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--list"])  # no --config needed
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_presets()
    swiss = next(ln for ln in lines if ln.startswith("toy_swissroll_vp "))
    assert "2-D swiss roll" in swiss and "#" not in swiss


def _verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("verb", list(_verbs()))
def test_every_option_is_explained_with_its_default(verb, capsys):
    parser = _verbs()[verb]
    fmt = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{verb} {action.option_strings} has no help"
        shown = fmt._get_help_string(action)
        assert "default" in shown.lower() or "(required)" in shown or action.default is \
            argparse.SUPPRESS, f"{verb} {action.option_strings}: {shown}"  # fmt: skip
    for option in ("--threads", "--quiet"):
        assert option in parser.format_help()
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    assert "default" in capsys.readouterr().out


def test_device_on_the_verbs_that_compute():
    verbs = _verbs()
    for verb in ("train", "sample", "likelihood", "tune", "control"):
        assert "--device" in verbs[verb].format_help(), verb
    assert "(default: auto)" in " ".join(verbs["sample"].format_help().split())
    assert "(default: 1000)" in " ".join(verbs["sample"].format_help().split())  # --n


def test_device_flag_sets_train_device(capsys):
    assert main(["train", "--config", "toy_swissroll_vp", "--dry-run", "--device", "auto"]) == 0
    text = capsys.readouterr()
    assert "device: cpu" in text.out or "device: cuda" in text.out
    assert text.err == ""  # a dry run prints only the config
    cfg = cli._train_config(
        build_parser().parse_args(
            [
                "train",
                "--config",
                "toy_swissroll_vp",
                "--device",
                "cpu",
                "--set",
                "train.device=cpu",
            ]
        )
    )
    assert cfg.train.device == "cpu"
