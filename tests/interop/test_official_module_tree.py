"""NCSN++ parameter names against the official module tree, for every architecture option.

``official_state`` below is a pure-Python model of how the official score_sde_pytorch code
(``models/ncsnpp.py``, ``models/layerspp.py``, ``models/layers.py``,
``models/up_or_down_sampling.py``, commit cb1f359) names and shapes its state dict. The tests
compare ``NCSNpp(...).state_dict()`` against it key for key, shape for shape and in order, over
every ``progressive`` x ``progressive_input`` x ``progressive_combine`` x ``resblock_type`` x
``fir`` combination (and attention, conditioning, embedding and depth variants), check the
reference itself against the recorded official key lists of ``shared/testdata``, and load a
checkpoint with official names for ``input_skip`` + ``cat`` through the official loader.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from conftest import TESTDATA, require

from scoresde.interop.official import load_official, official_net
from scoresde.nets import NCSNpp
from scoresde.nets import layers as L

Entries = list[tuple[str, tuple[int, ...]]]


# ---- the official module tree, as names and shapes -------------------------------------------
def _params(**tensors: tuple[int, ...]) -> Entries:
    return list(tensors.items())


def _sub(name: str, entries: Entries) -> Entries:
    return [(f"{name}.{k}", shape) for k, shape in entries]


def _conv(in_ch: int, out_ch: int, k: int) -> Entries:
    """``nn.Conv2d`` (``layers.ddpm_conv1x1`` / ``ddpm_conv3x3``, layers.py 100-124): with bias."""
    return _params(weight=(out_ch, in_ch, k, k), bias=(out_ch,))


def _linear(in_dim: int, out_dim: int) -> Entries:
    return _params(weight=(out_dim, in_dim), bias=(out_dim,))


def _norm(ch: int) -> Entries:
    return _params(weight=(ch,), bias=(ch,))


def _nin(in_dim: int, out_dim: int) -> Entries:
    """``layers.NIN`` (layers.py 546-550): ``W`` is (in, out), ``b`` (out,)."""
    return _params(W=(in_dim, out_dim), b=(out_dim,))


def _attn(ch: int) -> Entries:
    """``layerspp.AttnBlockpp`` (layerspp.py 62-72): GroupNorm_0, NIN_0..NIN_3."""
    out = _sub("GroupNorm_0", _norm(ch))
    for i in range(4):
        out += _sub(f"NIN_{i}", _nin(ch, ch))
    return out


def _resample(in_ch: int, out_ch: int, with_conv: bool, fir: bool, down: bool) -> Entries:
    """``layerspp.Upsample`` / ``Downsample`` (layerspp.py 94-145): nothing without a
    convolution; ``Conv_0`` (3x3) without FIR; ``Conv2d_0`` (``up_or_down_sampling.Conv2d``,
    up_or_down_sampling.py 23-37: ``weight`` (out, in, 3, 3) and ``bias``) with FIR. ``down``
    changes no name."""
    if not with_conv:
        return []
    return _sub("Conv2d_0" if fir else "Conv_0", _conv(in_ch, out_ch, 3))


def _resblock(o: dict, in_ch: int, out_ch: int | None = None, resample: bool = False) -> Entries:
    """``ResnetBlockDDPMpp`` (layerspp.py 166-186) / ``ResnetBlockBigGANpp`` (212-235).

    Both always get ``temb_dim = 4 nf`` from ncsnpp.py 115-131, so ``Dense_0`` exists even in an
    unconditional net. The shortcut on a width change is ``NIN_0`` (DDPM, ``conv_shortcut`` is
    never set) or the 1x1 ``Conv_2`` (BigGAN, also whenever it resamples).
    """
    out_ch = out_ch or in_ch
    e = _sub("GroupNorm_0", _norm(in_ch)) + _sub("Conv_0", _conv(in_ch, out_ch, 3))
    e += _sub("Dense_0", _linear(4 * o["nf"], out_ch))
    e += _sub("GroupNorm_1", _norm(out_ch)) + _sub("Conv_1", _conv(out_ch, out_ch, 3))
    if o["resblock_type"] == "ddpm" and in_ch != out_ch:
        e += _sub("NIN_0", _nin(in_ch, out_ch))
    if o["resblock_type"] == "biggan" and (in_ch != out_ch or resample):
        e += _sub("Conv_2", _conv(in_ch, out_ch, 1))
    return e


def _down(o: dict, mods: list[Entries], levels: list[int]) -> list[int]:
    """The downsampling path (ncsnpp.py 139-172); returns the skip widths ``hs_c``."""
    nf, fir, last = o["nf"], o["fir"], len(o["ch_mult"]) - 1
    mods.append(_conv(o["num_channels"], nf, 3))
    hs_c, in_ch, pyramid_ch = [nf], nf, o["num_channels"]
    for i, mult in enumerate(o["ch_mult"]):
        for _ in range(o["num_res_blocks"]):
            mods.append(_resblock(o, in_ch, nf * mult))
            in_ch = nf * mult
            if levels[i] in o["attn_resolutions"]:
                mods.append(_attn(in_ch))
            hs_c.append(in_ch)
        if i == last:
            continue
        if o["resblock_type"] == "ddpm":  # parameter-free without a conv: still one module
            mods.append(_resample(in_ch, in_ch, o["resamp_with_conv"], fir, down=True))
        else:
            mods.append(_resblock(o, in_ch, resample=True))
        if o["progressive_input"] == "input_skip":
            # layerspp.Combine (44-49): a 1x1 Conv_0 from the image channels (never updated)
            mods.append(_sub("Conv_0", _conv(pyramid_ch, in_ch, 1)))
            in_ch *= 2 if o["progressive_combine"] == "cat" else 1
        elif o["progressive_input"] == "residual":
            mods.append(_resample(pyramid_ch, in_ch, True, fir, down=True))
            pyramid_ch = in_ch
        hs_c.append(in_ch)
    return hs_c


def _up(o: dict, mods: list[Entries], levels: list[int], hs_c: list[int]) -> None:
    """The middle blocks and the upsampling path (ncsnpp.py 174-228)."""
    nf, C, fir, last = o["nf"], o["num_channels"], o["fir"], len(o["ch_mult"]) - 1
    in_ch = hs_c[-1]
    mods += [_resblock(o, in_ch), _attn(in_ch), _resblock(o, in_ch)]
    pyramid_ch = 0
    for i in reversed(range(last + 1)):
        for _ in range(o["num_res_blocks"] + 1):
            mods.append(_resblock(o, in_ch + hs_c.pop(), nf * o["ch_mult"][i]))
            in_ch = nf * o["ch_mult"][i]
        if levels[i] in o["attn_resolutions"]:
            mods.append(_attn(in_ch))
        if o["progressive"] == "output_skip" or (o["progressive"] == "residual" and i == last):
            # GroupNorm + 3x3 conv to the image channels, or to in_ch at the top of 'residual'
            out_ch = C if o["progressive"] == "output_skip" else in_ch
            mods += [_norm(in_ch), _conv(in_ch, out_ch, 3)]
            pyramid_ch = out_ch
        elif o["progressive"] == "residual":
            mods.append(_resample(pyramid_ch, in_ch, True, fir, down=False))
            pyramid_ch = in_ch
        if i != 0 and o["resblock_type"] == "ddpm":
            mods.append(_resample(in_ch, in_ch, o["resamp_with_conv"], fir, down=False))
        elif i != 0:
            mods.append(_resblock(o, in_ch, resample=True))
    if o["progressive"] != "output_skip":
        mods += [_norm(in_ch), _conv(in_ch, C, 3)]


def official_state(**options) -> Entries:
    """The official ``NCSNpp(config).state_dict()`` names and shapes, in order, for ``options``.

    Rules (``models/ncsnpp.py`` of score_sde_pytorch unless named otherwise): the buffer
    ``sigmas`` (num_scales,) is registered first (line 42); ``self.pyramid_upsample`` /
    ``self.pyramid_downsample`` (100-113) carry no tensors; ``all_modules`` lists, in order, the
    Fourier projection ``W`` (nf,) for 'fourier' (70-77, layerspp.py 32-37), two ``nn.Linear``
    if conditional (85-91; input 2 nf for 'fourier', nf for 'positional'), the input 3x3 conv
    (142), the down path (146-172), the middle ResBlock / attention / ResBlock (174-177), the up
    path (181-223) and, unless 'output_skip', the output GroupNorm + conv (225-228). A module
    without tensors (a resampler without a convolution) still takes its index.
    """
    o = {**BASE, **options}
    levels = [o["image_size"] // 2**i for i in range(len(o["ch_mult"]))]
    nf, mods = o["nf"], []
    if o["embedding_type"] == "fourier":
        mods.append(_params(W=(nf,)))
    if o["conditional"]:
        embed_dim = 2 * nf if o["embedding_type"] == "fourier" else nf
        mods += [_linear(embed_dim, 4 * nf), _linear(4 * nf, 4 * nf)]
    _up(o, mods, levels, _down(o, mods, levels))
    out = [("sigmas", (o["num_scales"],))]
    for i, entries in enumerate(mods):
        out += _sub(f"all_modules.{i}", entries)
    return out


BASE = dict(
    image_size=16,
    num_channels=3,
    centered=True,
    nf=16,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    dropout=0.0,
    resamp_with_conv=True,
    conditional=True,
    fir=True,
    fir_kernel=(1, 3, 3, 1),
    skip_rescale=True,
    resblock_type="biggan",
    progressive="none",
    progressive_input="residual",
    progressive_combine="sum",
    embedding_type="fourier",
    fourier_scale=16.0,
    init_scale=0.0,
    scale_by_sigma=True,
    nonlinearity="swish",
    sigma_min=0.01,
    sigma_max=50.0,
    num_scales=100,
)


def ours(**options) -> Entries:
    """Our NCSNpp's state dict as (name, shape) pairs, in order."""
    net = NCSNpp(**{**BASE, **options})
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def expected(**options) -> Entries:
    """The official list; an unconditional net here has no (official, unused) ``Dense_0``."""
    entries = official_state(**options)
    if not {**BASE, **options}["conditional"]:
        entries = [(k, s) for k, s in entries if ".Dense_0." not in k]
    return entries


# ---- tests -----------------------------------------------------------------------------------
PYRAMIDS = list(
    itertools.product(
        ["none", "output_skip", "residual"],
        ["none", "input_skip", "residual"],
        ["sum", "cat"],
        ["ddpm", "biggan"],
        [False, True],
    )
)


def _pyramid_options(combination: tuple) -> dict:
    names = ("progressive", "progressive_input", "progressive_combine", "resblock_type", "fir")
    return dict(zip(names, combination))


@pytest.mark.parametrize("combination", PYRAMIDS, ids=lambda c: "-".join(map(str, c)))
def test_state_dict_matches_the_official_tree(combination):
    options = _pyramid_options(combination)
    assert ours(**options) == expected(**options)


@pytest.mark.parametrize(
    "options",
    [
        dict(attn_resolutions=(16, 4), num_res_blocks=2),
        dict(attn_resolutions=(), resamp_with_conv=False, resblock_type="ddpm"),
        dict(resamp_with_conv=False, resblock_type="ddpm", fir=False, progressive_input="residual"),
        dict(conditional=False, progressive_input="input_skip", progressive_combine="cat"),
        dict(conditional=False, embedding_type="positional", resblock_type="ddpm"),
        dict(embedding_type="positional", ch_mult=(1, 2, 1, 2), image_size=32),
        dict(num_res_blocks=2, progressive_input="input_skip", progressive_combine="cat"),
    ],
)
def test_state_dict_matches_the_official_tree_for_other_options(options):
    for pyramid in ("none", "output_skip", "residual"):
        assert ours(**options, progressive=pyramid) == expected(**options, progressive=pyramid)


def _options_of(config: dict) -> dict:
    """The architecture options of an official config (its model and data fields)."""
    fields = {**config["model"], **config["data"]}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in BASE}


@pytest.mark.parametrize(
    "name",
    [
        "ve_ncsnpp_continuous_small",
        "vp_ddpmpp_continuous_small",
        "subvp_ddpmpp_continuous_small",
        "ve_ncsnpp_continuous_full",
    ],
)
def test_reference_reproduces_the_recorded_official_key_lists(name):
    """The reference tree against the key lists recorded from the official code itself."""
    config = json.loads(require(TESTDATA / f"{name}_config.json").read_text())
    keys = json.loads(require(TESTDATA / f"{name}_keys.json").read_text())
    reference = [[f"module.{k}", list(s)] for k, s in official_state(**_options_of(config))]
    assert reference == keys


# ---- an official input_skip + cat checkpoint through the loader ------------------------------
SKIP_CAT = dict(
    progressive="output_skip",
    progressive_input="input_skip",
    progressive_combine="cat",
    resblock_type="biggan",
    nf=8,
    ch_mult=(1, 2),
    image_size=8,
    attn_resolutions=(4,),
)


def _official_config(options: dict) -> dict:
    """An official-style config (model / data / training sections) for ``options``."""
    o = {**BASE, **options}
    data = {k: o.pop(k) for k in ("image_size", "num_channels", "centered")}
    model = {"name": "ncsnpp", **{k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}}
    model.update(normalization="GroupNorm", conv_size=3, attention_type="ddpm", ema_rate=0.999)
    return {"model": model, "data": data, "training": {"sde": "vesde", "continuous": True}}


def _official_checkpoint(options: dict) -> dict:
    """Random weights under the official names (``module.`` prefix), and an EMA list in the
    official ``parameters()`` order (the state-dict order without the buffer and frozen W)."""
    g = torch.Generator().manual_seed(0)
    model = {}
    for k, shape in official_state(**options):
        model[f"module.{k}"] = 0.1 * torch.randn(shape, generator=g)
    o = {**BASE, **options}
    sigmas = torch.exp(
        torch.linspace(math.log(o["sigma_max"]), math.log(o["sigma_min"]), o["num_scales"])
    )
    model["module.sigmas"] = sigmas.double()
    frozen = {"module.sigmas", "module.all_modules.0.W"}
    shadow = [v + 1.0 for k, v in model.items() if k not in frozen]
    return {"model": model, "ema": {"shadow_params": shadow, "num_updates": 3}, "step": 3}


@pytest.mark.parametrize("ema", [False, True])
def test_official_input_skip_cat_checkpoint_loads(tmp_path, ema):
    ckpt = _official_checkpoint(SKIP_CAT)
    assert any(k.endswith(".Conv_0.weight") and v.shape[-1] == 1 for k, v in ckpt["model"].items())
    path = tmp_path / "checkpoint_3.pth"
    torch.save(ckpt, path)
    model = load_official(path, _official_config(SKIP_CAT), ema=ema)
    state = model.net.state_dict()
    assert list(state) == [k.removeprefix("module.") for k in ckpt["model"]]
    frozen = {"module.sigmas", "module.all_modules.0.W"}
    for k, v in ckpt["model"].items():
        assert torch.equal(state[k.removeprefix("module.")], v + (ema and k not in frozen))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = model.score_fn(x, torch.tensor([0.3, 0.9]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_official_net_builds_every_pyramid_combination_with_official_names():
    for combination in PYRAMIDS:
        options = _pyramid_options(combination)
        net = official_net(_official_config(options))
        assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == expected(**options)


# ---- the input pyramid's computation -----------------------------------------------------------
@pytest.mark.parametrize("fir", [False, True])
@pytest.mark.parametrize("combine", ["sum", "cat"])
def test_input_skip_combines_the_downsampled_image(fir, combine):
    """As ncsnpp.py 289-292: before every Combine the image pyramid is downsampled once more
    (parameter-free FIR or mean) and Combine returns ``cat([Conv_0(image), h])`` or the sum."""
    torch.manual_seed(0)
    net = NCSNpp(**{**BASE, **SKIP_CAT, "progressive_combine": combine, "fir": fir}).eval()
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((mod, args, out)))
        for m in net.all_modules
        if isinstance(m, L.Combine)
    ]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net(x, torch.tensor([0.5, 2.0]))
    for h in hooks:
        h.remove()
    assert len(seen) == 1
    mod, (image, h), out = seen[0]
    torch.testing.assert_close(image, L.Downsample(3, fir=fir)(x))
    conv = mod.Conv_0(image)
    torch.testing.assert_close(out, torch.cat([conv, h], 1) if combine == "cat" else conv + h)


def test_combine_loads_state_dicts_with_its_former_conv_name():
    a, b = L.Combine(3, 8, method="cat"), L.Combine(3, 8, method="cat")
    old = {k.replace("Conv_0.", "Conv."): v for k, v in a.state_dict().items()}
    b.load_state_dict(old, strict=True)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
