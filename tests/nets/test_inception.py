"""The FID Inception-v3: names against an independent list of the torchvision layout, the parameter
count against torchvision's published number, the FID pooling branches against a hand-computed
pool, shapes and input checks, and loading the weights file with its one-line errors.

The real weights are not needed (nor shipped): random weights saved in the file's format stand in.
A full 299x299 forward costs ~6 GFLOP per image, so every forward here has two images.
"""

from __future__ import annotations

import copy
import itertools
import os

import numpy as np
import pytest
import torch

from scoresde.nets.inception import InceptionFeatures, pool3x3
from scoresde.training.inception import (
    INCEPTION_FILE,
    INCEPTION_URL,
    inception_path,
    load_inception,
)


def _randomized(seed: int) -> InceptionFeatures:
    """A network with random weights and random (mild) batch-norm statistics, in eval mode.

    He-initialized convolutions keep the input's signal through the 94 layers (PyTorch's default
    initialization shrinks it until the biases alone set the features).
    """
    torch.manual_seed(seed)
    net = InceptionFeatures()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.05, 0.05)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def net() -> InceptionFeatures:
    """One randomized network shared by the tests that only read it."""
    return _randomized(0)


def _file_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the weights file holds it: without ``num_batches_tracked`` counters."""
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


# ---- names and sizes ---------------------------------------------------------------------------
# The torchvision Inception3 layout, written out from its description: each entry is one
# BasicConv2d (conv without bias + batch norm).
_CONVS = {
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2"]
    + [f"branch3x3dbl_{i}" for i in (1, 2, 3)]
    + ["branch_pool"],
    "B": ["branch3x3"] + [f"branch3x3dbl_{i}" for i in (1, 2, 3)],
    "C": ["branch1x1"]
    + [f"branch7x7_{i}" for i in (1, 2, 3)]
    + [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)]
    + ["branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b"]
    + ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_MIXED = {
    **dict.fromkeys(["Mixed_5b", "Mixed_5c", "Mixed_5d"], "A"),
    "Mixed_6a": "B",
    **dict.fromkeys(["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"], "C"),
    "Mixed_7a": "D",
    **dict.fromkeys(["Mixed_7b", "Mixed_7c"], "E"),
}
_UNIT = ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]


def _expected_keys() -> set[str]:
    """Every key of the weights file, from the layout above."""
    prefixes = list(_STEM) + [f"{b}.{c}" for b, kind in _MIXED.items() for c in _CONVS[kind]]
    return {f"{p}.{u}" for p in prefixes for u in _UNIT} | {"fc.weight", "fc.bias"}


def test_state_dict_keys_equal_the_torchvision_layout(net):
    keys = set(_file_state(net))
    assert keys == _expected_keys()
    assert len(keys) == 94 * 5 + 2  # Inception-v3 has 94 convolutions outside its aux head
    assert {k.split(".")[0] for k in keys} == set(_STEM) | set(_MIXED) | {"fc"}
    assert tuple(net.fc.weight.shape) == (1008, 2048)
    assert tuple(net.Conv2d_1a_3x3.conv.weight.shape) == (32, 3, 3, 3)
    assert net.Conv2d_1a_3x3.conv.bias is None
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_parameter_count_matches_torchvision_published_count(net):
    # torchvision publishes num_params = 27,161,264 for inception_v3 (1000 classes, with the
    # auxiliary head; Inception_V3_Weights.IMAGENET1K_V1.meta). The aux head, from its layer
    # shapes: conv0 768->128 1x1 + BN(128), conv1 128->768 5x5 + BN(768), fc 768->1000.
    aux = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
    no_aux_1000 = 27_161_264 - aux  # 23,834,568
    expected = no_aux_1000 + 8 * (2048 + 1)  # 8 more classes in fc: weight rows + biases
    assert no_aux_1000 == 23_834_568
    assert sum(p.numel() for p in net.parameters()) == expected


# ---- the FID pooling branches ------------------------------------------------------------------
def _hand_pool(x: np.ndarray, mode: str) -> np.ndarray:
    """3x3 stride-1 pool by explicit loops over the window's in-image pixels."""
    c, h, w = x.shape
    out = np.empty_like(x)
    for i, j in itertools.product(range(h), range(w)):
        win = x[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].reshape(c, -1)
        out[:, i, j] = win.mean(axis=1) if mode == "avg" else win.max(axis=1)
    return out


_POOLED = {
    "Mixed_5b": (192, 32, "avg"),
    "Mixed_5c": (256, 64, "avg"),
    "Mixed_5d": (288, 64, "avg"),
    "Mixed_6b": (768, 192, "avg"),
    "Mixed_6e": (768, 192, "avg"),
    "Mixed_7b": (1280, 192, "avg"),
    "Mixed_7c": (2048, 192, "max"),
}


@pytest.mark.parametrize("block", list(_POOLED))
def test_pool_branch_is_the_fid_variant(net, block):
    c_in, p, mode = _POOLED[block]
    m = copy.deepcopy(getattr(net, block)).double()
    torch.manual_seed(1)
    x = torch.rand(1, c_in, 4, 5, dtype=torch.float64) + 0.5  # positive: ReLU keeps it
    bn = m.branch_pool.bn
    with torch.no_grad():  # branch_pool -> channel k of the pooled input, BN the identity
        m.branch_pool.conv.weight.zero_()
        m.branch_pool.conv.weight[torch.arange(p), torch.arange(p), 0, 0] = 1.0
        for t, v in zip((bn.weight, bn.bias, bn.running_mean, bn.running_var), (1, 0, 0, 1)):
            t.fill_(v)
        out = m(x)[0, -p:].numpy() * np.sqrt(1 + bn.eps)
    want = _hand_pool(x[0, :p].numpy(), mode)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    # the plain torchvision pool (average counting the zero padding) differs at the border
    plain = torch.nn.functional.avg_pool2d(x[:, :p], 3, 1, 1, count_include_pad=True)[0].numpy()
    assert np.abs(plain - want).max() > 0.1


def test_pool3x3_rejects_unknown_mode():
    with pytest.raises(ValueError, match="valid: avg, max"):
        pool3x3(torch.zeros(1, 1, 3, 3), "mean")


# ---- features ----------------------------------------------------------------------------------
def test_features_shapes_grey_and_rgb(net):
    torch.manual_seed(2)
    rgb = torch.rand(2, 3, 32, 32)
    grey = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        f_rgb = net.features(rgb)
        f_grey = net(grey)
        f_rep = net.features(grey.repeat(1, 3, 1, 1))
    for f in (f_rgb, f_grey):
        assert f.shape == (2, 2048) and f.dtype == torch.float32
        assert torch.isfinite(f).all() and (f >= 0).all() and f.abs().sum() > 0  # means of ReLUs
    torch.testing.assert_close(f_grey, f_rep, rtol=0, atol=0)
    assert not torch.allclose(f_rgb[0], f_rgb[1])


@pytest.mark.parametrize(
    "shape, match",
    [((2, 2, 8, 8), "C in"), ((3, 8, 8), "C in"), ((0, 3, 8, 8), "B >= 1")],
)
def test_features_reject_wrong_shapes(net, shape, match):
    with pytest.raises(ValueError, match=match):
        net.features(torch.rand(shape))


@pytest.mark.parametrize("scale, shift", [(255.0, 0.0), (2.0, -1.0)])
def test_features_reject_values_outside_unit_range(net, scale, shift):
    x = torch.rand(2, 3, 8, 8) * scale + shift
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        net.features(x)


def test_features_reject_integer_images(net):
    with pytest.raises(ValueError, match="float"):
        net.features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ---- the weights file --------------------------------------------------------------------------
def test_round_trip_through_a_file_without_counters(net, tmp_path):
    path = tmp_path / INCEPTION_FILE
    torch.save(_file_state(net), path, _use_new_zipfile_serialization=False)  # an old torch's file
    loaded = load_inception(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.fc.weight.device.type == "cpu"
    for k, v in _file_state(net).items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.manual_seed(3)
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(x), net.features(x), rtol=0, atol=0)


def _shaped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of the right shapes that store one number each (a small file for error tests)."""
    return {k: torch.zeros(()).expand(v.shape) for k, v in state.items()}


def test_data_dir_lookup_and_counters_accepted(net, tmp_path, monkeypatch):
    root = tmp_path / "second"
    (root / "features").mkdir(parents=True)
    empty = tmp_path / "first"
    monkeypatch.setenv("SCORESDE_DATA", f"{empty}{os.pathsep}{root}")
    assert inception_path() == empty / "features" / INCEPTION_FILE  # none has it: the first
    # a file written by a newer PyTorch, with the counters, loads too
    torch.save(_shaped(net.state_dict()), root / "features" / INCEPTION_FILE)
    assert inception_path() == root / "features" / INCEPTION_FILE  # the root that holds it
    assert inception_path(empty) == empty / "features" / INCEPTION_FILE  # data_dir wins
    loaded = load_inception()
    assert float(loaded.fc.weight.abs().sum()) == 0.0


def test_missing_file_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_inception(data_dir=tmp_path)
    msg = str(e.value)
    assert INCEPTION_URL in msg and str(tmp_path / "features" / INCEPTION_FILE) in msg
    assert "--inception FILE" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_inception(tmp_path / "nothere.pth")


class _Obj:
    """Not a tensor: ``weights_only`` loading refuses it."""


@pytest.mark.parametrize(
    "content, match",
    [
        ({"fc.weight": [1, 2]}, "not a state dict of tensors"),
        ([torch.zeros(2)], "not a state dict of tensors"),
        ({"fc.weight": _Obj()}, "other than tensors"),
        (b"garbage" * 100, "corrupt"),
    ],
)
@pytest.mark.parametrize("legacy", [False, True])
def test_unreadable_files_raise_one_line(tmp_path, content, match, legacy):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content[: 300 if legacy else None])
    else:  # the zip format of torch >= 1.6, or the legacy format of older files
        torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match=match) as e:
        load_inception(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_renamed_key_and_wrong_shape_are_named(net, tmp_path):
    state = _shaped(_file_state(net))
    state["Mixed_7c.branch_pool.conv.weights"] = state.pop("Mixed_7c.branch_pool.conv.weight")
    state["fc.weight"] = torch.zeros(()).expand(1000, 2048)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as e:
        load_inception(path)
    msg = str(e.value)
    assert "1 missing: Mixed_7c.branch_pool.conv.weight;" in msg
    assert "1 unexpected: Mixed_7c.branch_pool.conv.weights" in msg
    assert "fc.weight (1000, 2048) vs (1008, 2048)" in msg
    assert str(path) in msg and "\n" not in msg
