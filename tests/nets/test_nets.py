"""Image networks: FIR resampling against an independent reference, every NCSN++ option
combination (including those the official code crashes on), DDPM and the tutorial U-Net, dtypes,
sizes, gradients and the ``build_net`` boundary."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from scoresde.core.score import ScoreModel
from scoresde.core.sde import VPSDE
from scoresde.nets import DDPM, NETS, NCSNpp, ScoreNet, build_net, coerce
from scoresde.nets import layers as L


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run up to ~60x slower with 2 threads than with 1 when the CPU is shared
    (measured here under load); these tests use one thread and restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# float64 round-off of a few hundred multiply-adds of O(1) numbers: ~1e-14; 1e-10 leaves room.
EXACT = dict(rtol=1e-10, atol=1e-10)


def upfirdn_reference(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]):
    """StyleGAN2's upfirdn2d spelled out: zero-stuff, pad, true 2-D convolution, decimate."""
    B, C, H, W = x.shape
    out = []
    for img in x.reshape(B * C, H, W):
        s = np.zeros((H * up, W * up))
        s[::up, ::up] = img
        s = np.pad(s, [pad, pad])
        out.append(scipy.signal.convolve2d(s, k, mode="valid")[::down, ::down])
    return np.stack(out).reshape(B, C, *out[0].shape)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1)])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (1, 1)])
@pytest.mark.parametrize("pad", [(0, 0), (2, 1), (1, 3)])
def test_upfirdn2d_matches_reference(taps, up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64)
    k = L.fir_kernel2d(taps).double()
    # an asymmetric filter catches a missing flip
    k = k * torch.linspace(0.5, 1.5, k.numel(), dtype=torch.float64).reshape(k.shape)
    ours = L.upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = upfirdn_reference(x.numpy(), k.numpy(), up, down, pad)
    torch.testing.assert_close(ours, torch.from_numpy(ref), **EXACT)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 5, 10, 10, 5, 1)])
def test_fir_up_and_down_are_adjoint_and_keep_constants(taps):
    """<down(x), y> = <x, up(y)> / 4 for symmetric even-length filters (odd ones are shifted by
    half a pixel by StyleGAN2's padding); both keep a constant image's interior."""
    g = torch.Generator().manual_seed(1)
    k = L.fir_kernel2d(taps).double()
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    lhs = (L.downsample_2d(x, k) * y).sum()
    rhs = (x * L.upsample_2d(y, k)).sum() / 4
    torch.testing.assert_close(lhs, rhs, **EXACT)
    ones = torch.ones(1, 1, 12, 12, dtype=torch.float64)
    m = len(taps)  # the filter reaches at most len(taps) samples into the zero padding
    u = L.upsample_2d(ones, k)[..., m:-m, m:-m]
    d = L.downsample_2d(ones, k)[..., 2:-2, 2:-2]
    torch.testing.assert_close(u, torch.ones_like(u), **EXACT)
    torch.testing.assert_close(d, torch.ones_like(d), **EXACT)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1)])
def test_fused_fir_upsample_conv_is_upsample_then_conv_padded_once(taps):
    """The official crash path: FIR 2x upsampling fused with a 3x3 conv equals FIR upsampling
    (padded one pixel further) followed by a valid 3x3 convolution."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    k = L.fir_kernel2d(taps).double()
    p = len(taps) - 2
    ref = F.conv2d(L.upfirdn2d(x, 4 * k, up=2, pad=((p + 1) // 2 + 2, p // 2 + 1)), w)
    torch.testing.assert_close(L.upsample_conv_2d(x, w, k), ref, **EXACT)
    if taps == (1, 1):  # box filter = nearest: away from the border, nearest + same-padded conv
        nearest = F.conv2d(L.naive_upsample_2d(x), w, padding=1)
        torch.testing.assert_close(
            L.upsample_conv_2d(x, w, k)[..., 1:-1, 1:-1], nearest[..., 1:-1, 1:-1]
        )


def test_fir_downsample_conv_is_filter_then_strided_conv():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    k = L.fir_kernel2d((1, 3, 3, 1)).double()
    filtered = upfirdn_reference(x.numpy(), k.numpy(), 1, 1, (2, 2))
    ref = F.conv2d(torch.from_numpy(filtered), w, stride=2)
    torch.testing.assert_close(L.conv_downsample_2d(x, w, k), ref, **EXACT)


def test_nearest_upsample_layers_repeat_pixels():
    """The other official crash path: non-FIR Upsample is nearest-neighbour (+ conv)."""
    x = torch.randn(2, 4, 3, 5)
    up = L.Upsample(4, fir=False, with_conv=False)
    torch.testing.assert_close(up(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    upc = L.Upsample(4, 6, fir=False, with_conv=True)
    torch.testing.assert_close(upc(x), upc.Conv_0(up(x)))
    assert L.naive_downsample_2d(up(x)).allclose(x)


def test_nin_is_per_pixel_linear_map_with_in_out_weight():
    nin = L.NIN(3, 5)
    assert nin.W.shape == (3, 5) and nin.b.shape == (5,)
    x = torch.randn(2, 3, 4, 4)
    ref = torch.einsum("bchw,co->bohw", x, nin.W) + nin.b[:, None, None]
    torch.testing.assert_close(nin(x), ref)


def test_attention_matches_explicit_softmax():
    g = torch.Generator().manual_seed(4)
    blk = L.AttnBlock(8, init_scale=1.0).double()
    x = torch.randn(2, 8, 3, 4, generator=g, dtype=torch.float64)
    h = blk.GroupNorm_0(x)
    q, k, v = blk.NIN_0(h), blk.NIN_1(h), blk.NIN_2(h)
    w = torch.einsum("bchw,bcij->bhwij", q, k).reshape(2, 3, 4, 12) / 8**0.5
    a = torch.einsum("bhwij,bcij->bchw", w.softmax(-1).reshape(2, 3, 4, 3, 4), v)
    torch.testing.assert_close(blk(x), x + blk.NIN_3(a), **EXACT)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 3.5, 999.0], dtype=torch.float64)
    emb = L.timestep_embedding(t, 6)
    freqs = 10000.0 ** (-torch.arange(3, dtype=torch.float64) / 2)
    ref = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1)
    torch.testing.assert_close(emb, ref, **EXACT)
    assert L.timestep_embedding(t, 7).shape == (3, 7)


# ---- NCSN++ option combinations -------------------------------------------------------------
TINY = dict(
    nf=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    image_size=8,
    dropout=0.0,
    init_scale=1.0,
)
GRID = list(
    itertools.product(
        [True, False],
        ["biggan", "ddpm"],
        ["none", "output_skip", "residual"],
        ["none", "input_skip", "residual"],
    )
)


def _check_grads(net: torch.nn.Module, out: torch.Tensor) -> None:
    (out**2).sum().backward()
    dead = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("fir,resblock,progressive,progressive_input", GRID)
def test_ncsnpp_every_resampling_and_pyramid_option(fir, resblock, progressive, progressive_input):
    torch.manual_seed(0)
    net = NCSNpp(
        **TINY,
        fir=fir,
        resblock_type=resblock,
        progressive=progressive,
        progressive_input=progressive_input,
        embedding_type="positional",
        scale_by_sigma=False,
    )
    x = torch.randn(3, 3, 8, 8)
    label = torch.tensor([0.0, 400.0, 999.0])
    out = net(x, label)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # examples do not interact (GroupNorm and attention are per example)
    torch.testing.assert_close(net(x[1:2], label[1:2]), out[1:2], rtol=1e-5, atol=1e-5)
    _check_grads(net, out)


@pytest.mark.parametrize("combine", ["sum", "cat"])
@pytest.mark.parametrize("conditional,skip_rescale", [(True, False), (False, True)])
def test_ncsnpp_combine_conditioning_and_skip_rescale(combine, conditional, skip_rescale):
    torch.manual_seed(0)
    net = NCSNpp(
        **TINY,
        progressive="output_skip",
        progressive_input="input_skip",
        progressive_combine=combine,
        conditional=conditional,
        skip_rescale=skip_rescale,
    )
    sigma = torch.tensor([0.01, 1.0, 50.0])
    x = torch.rand(3, 3, 8, 8)
    out = net(x, sigma)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if not conditional:  # the label then enters only through the division by sigma
        torch.testing.assert_close(
            out * sigma[:, None, None, None], net(x, torch.ones(3)), rtol=1e-5, atol=1e-5
        )
    assert all(".Dense_0." not in k for k in net.state_dict()) == (not conditional)
    _check_grads(net, out)


def test_ncsnpp_scale_by_sigma_divides_by_the_label():
    torch.manual_seed(0)
    net = NCSNpp(**TINY, scale_by_sigma=True).eval()
    ref = NCSNpp(**TINY, scale_by_sigma=False).eval()
    ref.load_state_dict(net.state_dict())
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 20.0])
    torch.testing.assert_close(net(x, sigma) * sigma[:, None, None, None], ref(x, sigma))


def _float64_agrees(net: torch.nn.Module, x: torch.Tensor, label: torch.Tensor) -> None:
    """float32 output equals the float64 one up to float32 round-off (tolerance 1e-4 of the max:
    the official float32 code itself is within 1.9e-5 of its float64 run)."""
    out32 = net.float()(x.float(), label.float())
    out64 = net.double()(x.double(), label.double())
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    err = (out32.double() - out64).abs().max()
    assert err <= 1e-4 * out64.abs().max()


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (12, 4)])
@pytest.mark.parametrize("embedding,fir", [("fourier", True), ("positional", False)])
def test_ncsnpp_sizes_channels_and_dtypes(size, channels, embedding, fir):
    torch.manual_seed(0)
    net = NCSNpp(
        **{**TINY, "image_size": size},
        num_channels=channels,
        embedding_type=embedding,
        fir=fir,
        scale_by_sigma=embedding == "fourier",
        centered=False,
    ).eval()
    x = torch.rand(2, channels, size, size)
    label = torch.tensor([0.1, 10.0]) if embedding == "fourier" else torch.tensor([3.0, 700.0])
    _float64_agrees(net, x, label)
    assert net(x.double(), label.double()).shape == x.shape


def test_ncsnpp_attention_levels_follow_image_size():
    net = NCSNpp(**{**TINY, "ch_mult": (1, 1, 1), "image_size": 16, "attn_resolutions": (8,)})
    assert net.attn_levels == [False, True, False]
    n_attn = sum(isinstance(m, L.AttnBlock) for m in net.all_modules)
    # down: 1 block at level 1; middle: 1; up: once at level 1
    assert n_attn == 3


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_size=12, ch_mult=(1, 1, 1, 1)),
        dict(progressive="x"),
        dict(nonlinearity="tanh"),
        dict(nf=6),
    ],
)
def test_ncsnpp_rejects_bad_configs(bad):
    with pytest.raises(ValueError):
        NCSNpp(**{**TINY, **bad})


# ---- DDPM ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,channels", [(8, 3), (16, 1)])
def test_ddpm_sizes_channels_dtypes_and_gradients(size, channels):
    torch.manual_seed(0)
    cfg = dict(
        nf=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(size // 2,),
        image_size=size,
        num_channels=channels,
        dropout=0.0,
    )
    net = DDPM(**cfg).eval()
    x, label = torch.randn(2, channels, size, size), torch.tensor([5.0, 900.0])
    _float64_agrees(net, x, label)
    net = DDPM(**cfg, resamp_with_conv=False).float()
    out = net(x, label)
    assert out.shape == x.shape
    _check_grads(net, out)


def test_ddpm_rejects_widths_not_divisible_by_groups():
    with pytest.raises(ValueError, match="num_groups"):
        DDPM(nf=16, ch_mult=(1,), image_size=8)
    assert DDPM(nf=16, ch_mult=(1,), image_size=8, num_groups=8, attn_resolutions=())


# ---- tutorial U-Net ------------------------------------------------------------------------------
def test_unet_tutorial_layout_is_the_seed_notebooks():
    net = ScoreNet()
    sd = net.state_dict()
    assert sd["embed.W"].shape == (128,) and not net.embed.W.requires_grad
    assert sd["conv1.weight"].shape == (32, 1, 3, 3) and "conv1.bias" not in sd
    assert sd["dense1.dense.weight"].shape == (32, 256)
    assert sd["tconv3.weight"].shape == (256, 64, 3, 3)
    assert sd["tconv1.weight"].shape == (64, 1, 3, 3) and "tconv1.bias" in sd
    assert net.gnorm1.num_groups == 4 and net.gnorm2.num_groups == 32
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor([0.1, 0.9])).shape == x.shape


@pytest.mark.parametrize(
    "padded,embedding", [(False, "fourier"), (True, "positional"), (True, "fourier")]
)
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (20, 2)])
def test_unet_tutorial_options_sizes_and_gradients(padded, embedding, size, channels):
    torch.manual_seed(0)
    net = ScoreNet(
        channels=(8, 16, 32, 32),
        embed_dim=16,
        padded=padded,
        embedding=embedding,
        num_channels=channels,
    )
    x, t = torch.randn(2, channels, size, size), torch.tensor([0.01, 0.7])
    out = net(x, t)
    assert out.shape == x.shape
    _check_grads(net, out)
    _float64_agrees(net.eval(), x, t)


def test_unet_tutorial_output_is_raw_and_scaled_parameterization_divides_by_sigma():
    torch.manual_seed(0)
    net = ScoreNet(channels=(8, 16, 32, 32), embed_dim=16)
    sde = VPSDE()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0.2, 0.8])
    score = ScoreModel(net, sde, "scaled", "t")(x, t)
    torch.testing.assert_close(score, net(x, t) / sde.sigma(t)[:, None, None, None])


def test_positional_embedding_is_smoother_than_fourier_in_the_label():
    """The smooth option (frequencies <= 10 per unit t) moves the embedding far less for a small
    change of t than the seed's scale-8 random features (frequencies 2 pi |W|, W ~ N(0, 64))."""
    torch.manual_seed(0)
    four = ScoreNet(embed_dim=64, channels=(8, 16, 32, 32))
    pos = ScoreNet(embed_dim=64, channels=(8, 16, 32, 32), embedding="positional")
    t, dt = torch.tensor([0.5]), 1e-2
    jump = [
        (m._embedding(t + dt, torch.float32) - m._embedding(t, torch.float32)).norm()
        for m in (four, pos)
    ]
    assert jump[1] < jump[0] / 3


# ---- build_net ----------------------------------------------------------------------------------
def test_build_net_builds_every_image_net_and_checks_keys_and_types():
    assert {"ncsnpp", "ddpm", "unet_tutorial"} <= set(NETS)
    net = build_net("ncsnpp", {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "image_size": 8})
    assert isinstance(net, NCSNpp) and net.config.ch_mult == (1, 2)
    assert isinstance(build_net("ddpm", {"nf": 32, "ch_mult": [1]}), DDPM)
    assert isinstance(build_net("unet_tutorial", {"padded": True}), ScoreNet)
    with pytest.raises(ValueError, match="valid: .*ddpm.*ncsnpp"):
        build_net("unet", {})
    with pytest.raises(ValueError, match="'nff'.*valid: .*nf"):
        build_net("ncsnpp", {"nff": 8})
    with pytest.raises(ValueError, match="'nf'.*int"):
        build_net("ncsnpp", {"nf": 8.5})
    with pytest.raises(ValueError, match="'fir'.*bool"):
        build_net("ncsnpp", {"fir": "yes"})
    with pytest.raises(ValueError, match="'ch_mult'"):
        build_net("ncsnpp", {"ch_mult": [1, "2"]})
    with pytest.raises(ValueError, match="resblock_type"):
        build_net("ncsnpp", {"resblock_type": "resnet"})


# ---- one Fourier embedding, one value checker ----------------------------------------------------
def test_one_fourier_embedding_keeps_each_networks_state_dict_layout():
    """The MLP, NCSN++ and the tutorial U-Net share one class; ``W`` keeps its key and shape in
    each, a buffer in the MLP and a frozen parameter in the others (as in official checkpoints)."""
    mlp = build_net("mlp", {"dim": 2, "embed_dim": 8})
    ncsn = build_net("ncsnpp", {"nf": 8, "ch_mult": [1], "num_res_blocks": 1, "image_size": 8})
    unet = build_net("unet_tutorial", {"embed_dim": 16})
    fourier = L.GaussianFourierProjection
    assert type(mlp.embed) is type(ncsn.all_modules[0]) is type(unet.embed) is fourier
    assert mlp.state_dict()["embed.W"].shape == (4,)
    assert "embed.W" not in dict(mlp.named_parameters())
    assert dict(ncsn.named_parameters())["all_modules.0.W"].shape == (8,)
    assert not dict(unet.named_parameters())["embed.W"].requires_grad
    t = torch.rand(5, dtype=torch.float64)
    proj = t[:, None].float() * mlp.embed.W[None, :] * 2 * math.pi
    torch.testing.assert_close(mlp.embed(t), torch.cat([proj.sin(), proj.cos()], -1))
    with pytest.raises(ValueError, match="even"):
        build_net("mlp", {"dim": 2, "embed_dim": 7})


def test_one_value_checker_for_network_options_and_configs():
    assert coerce(3.0, int) == 3 and isinstance(coerce(3, float), float)
    assert coerce([1, 2], tuple[int, ...]) == [1, 2] and coerce(None, float | None) is None
    assert coerce("1e-3", float, strings=True) == 1e-3
    bad = [("1e-3", float), (2.5, int), (True, int), ("yes", bool), ([1, "2"], list[int])]
    for value, hint in bad:
        with pytest.raises(TypeError, match="expected"):
            coerce(value, hint)
