"""The feature network's training, cache file and checks, on the 8x8 digits (few steps)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

from scoresde.data.images import DatasetNotFound
from scoresde.nets.features import FeatureNet
from scoresde.training.features import (
    FeatureInfo,
    features_path,
    image_features,
    load_features,
    train_features,
)

STEPS = 60  # of 128 digits each: about 5 epochs of the 1,500 training digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[FeatureInfo, list]:
    """One short run into a temporary data directory, and the (done, total) reports it made."""
    root = tmp_path_factory.mktemp("data")
    calls: list = []
    info = train_features(
        "digits", seed=0, data_dir=root, steps=STEPS, callback=lambda *a: calls.append(a)
    )
    return info, calls


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_writes_the_file_and_its_record(trained):
    info, calls = trained
    assert info.path == features_path("digits", 0, info.path.parents[1])
    assert info.path.name == "digits-seed0.pt" and info.path.parent.name == "features"
    meta = json.loads(info.path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(info.path.read_bytes()).hexdigest() == info.sha256
    assert meta["dataset"] == "digits" and meta["seed"] == 0 and meta["steps"] == STEPS
    assert meta["config"] == dict(channels=1, size=8, classes=10, width=32, features=128)
    assert meta["accuracy"] == info.accuracy > 0.5  # chance is 0.1
    assert meta["seconds"] > 0
    assert all(v.dtype == torch.float32 for v in _weights(info.path).values())
    assert calls == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert not [p for p in info.path.parent.iterdir() if p.suffix == ".tmp"]  # nothing left over


def test_same_seed_same_weights_and_global_rng_untouched(trained, tmp_path):
    info, _ = trained
    torch.manual_seed(1234)  # another global random state: the seed alone must decide
    state = torch.random.get_rng_state()
    again = train_features("digits", seed=0, steps=STEPS, out=tmp_path / "again.pt")
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = _weights(info.path), _weights(again.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.sha256 == info.sha256
    other = train_features("digits", seed=1, steps=5, out=tmp_path / "other.pt")
    assert not torch.equal(_weights(other.path)["head.weight"], a["head.weight"])


def test_cache_round_trip(trained):
    info, _ = trained
    net = load_features("digits", data_dir=info.path.parents[1])
    assert isinstance(net, FeatureNet) and not net.training
    saved = _weights(info.path)
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    assert load_features(path=info.path).config() == net.config()


def test_changed_file_is_refused(trained, tmp_path):
    info, _ = trained
    copy = tmp_path / "features" / info.path.name
    copy.parent.mkdir()
    shutil.copy(info.path, copy)
    shutil.copy(info.path.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="was changed or corrupted") as e:
        load_features("digits", data_dir=tmp_path)
    assert "\n" not in str(e.value) and "scoresde features train --data digits" in str(e.value)
    os.remove(copy.with_suffix(".json"))
    with pytest.raises(ValueError, match="has no record"):
        load_features(path=copy)


def test_record_of_another_network_or_data_set_is_refused(trained, tmp_path):
    info, _ = trained
    copy = tmp_path / info.path.name
    shutil.copy(info.path, copy)
    meta = json.loads(info.path.with_suffix(".json").read_text())
    meta["config"]["width"] = 16
    copy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its record's network") as e:
        load_features(path=copy)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="trained on 'digits', not 'mnist'"):
        load_features("mnist", path=info.path)


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_features("digits", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "features" / "digits-seed0.pt") in msg
    assert "`scoresde features train --data digits --data-dir " in msg
    with pytest.raises(FileNotFoundError, match="--seed 3"):
        load_features("digits", seed=3, data_dir=tmp_path)


def test_features_path_follows_the_data_search(tmp_path, monkeypatch):
    from conftest import DATA

    empty = tmp_path / "empty"
    empty.mkdir()
    if (DATA / "mnist.npz").is_file():
        monkeypatch.setenv("SCORESDE_DATA", os.pathsep.join([str(empty), str(DATA)]))
        assert features_path("mnist", 2) == DATA / "features" / "mnist-seed2.pt"
        # the digits need no folder: the first existing root
        assert features_path("digits") == empty / "features" / "digits-seed0.pt"
    with pytest.raises(DatasetNotFound, match="not found"):
        features_path("mnist", data_dir=empty)
    with pytest.raises(ValueError, match="unknown data set 'mnsit'.*valid: mnist"):
        features_path("mnsit")


def test_image_features(trained):
    info, _ = trained
    net = load_features(path=info.path)
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    f = image_features(net, x, batch_size=3)
    assert f.dtype == torch.float64 and f.shape == (7, 128) and f.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(f, net.features(x).double(), atol=1e-6)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        image_features(net, 2 * x - 1)
    with pytest.raises(ValueError, match="float tensor"):
        image_features(net, (x * 255).to(torch.uint8))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_features("digits", steps=0, out=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="needs a data set name or a path"):
        load_features()
