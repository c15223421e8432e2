"""Networks: shapes for any frame size, registry, presets, receptive field, tile safety."""
from __future__ import annotations

import pytest
import torch

from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.models import (
    PRESETS,
    CNNTUNet,
    UNet2D,
    UnknownArchitectureError,
    build_model,
    build_preset,
    empirical_receptive_field_radius,
    is_tile_safe,
    model_is_temporal,
    receptive_field_radius,
    size_multiple,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 1, 64, 64), (1, 1, 1, 97), (1, 1, 97, 1), (1, 1, 1, 1)])
def test_unet_keeps_any_shape(shape: tuple[int, ...]) -> None:
    model = UNet2D(widths=(4, 8, 16)).eval()
    y = model(torch.randn(shape))
    assert y.shape == shape
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_unet_multichannel_and_residual() -> None:
    model = UNet2D(in_channels=2, out_channels=3, widths=(4, 8)).eval()
    assert model(torch.randn(1, 2, 21, 30)).shape == (1, 3, 21, 30)
    assert model.residual is False  # no residual when channels differ
    res = UNet2D(widths=(4, 8), residual=True).eval()
    nores = UNet2D(widths=(4, 8), residual=False).eval()
    nores.load_state_dict(res.state_dict())
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(res(x), nores(x) + x)


def test_unet_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError):
        UNet2D(widths=(4,))(torch.randn(16, 16))


@pytest.mark.parametrize("t", [1, 3, 5])
@pytest.mark.parametrize("hw", [(19, 23), (16, 16), (1, 30)])
def test_cnnt_keeps_any_shape(t: int, hw: tuple[int, int]) -> None:
    model = CNNTUNet(channels=8, heads=2).eval()
    x = torch.randn(2, 1, t, *hw)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_cnnt_attention_mixes_frames_only_through_attention() -> None:
    """Changing frame 0 changes the output of frame 2 (attention across T), for T > 1."""
    model = CNNTUNet(channels=8, heads=2).eval()
    x = torch.randn(1, 1, 3, 16, 16)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :, 2], model(x2)[:, :, 2])


def test_registry_and_presets() -> None:
    assert isinstance(build_model("unet", widths=[4, 8]), UNet2D)  # lists from JSON are accepted
    assert isinstance(build_model("cnnt", channels=8, heads=2), CNNTUNet)
    assert set(PRESETS) >= {"standard", "fast", "temporal"}
    assert PRESETS["standard"] == ("unet", {"widths": (32, 64, 128, 256)})
    assert PRESETS["fast"] == ("unet", {"widths": (16, 32, 64, 128)})
    lite, _, _ = build_preset("lite")
    assert isinstance(lite, UNet2D) and lite.widths == (8, 16, 32, 64, 128) and lite.size_multiple == 16
    assert lite(torch.zeros(1, 1, 37, 50)).shape == (1, 1, 37, 50)  # padded to 48x64 inside, cropped back
    model, arch, kwargs = build_preset("fast")
    assert arch == "unet" and kwargs == {"widths": [16, 32, 64, 128]}
    assert model.widths == (16, 32, 64, 128)
    assert model_is_temporal(build_preset("temporal")[0])
    assert not model_is_temporal(model)
    assert size_multiple(model) == 8


def test_registry_errors() -> None:
    with pytest.raises(UnknownArchitectureError, match="unknown"):
        build_model("resnet")
    with pytest.raises(ValueError):  # also a ValueError
        build_model("resnet")
    with pytest.raises(ConfigError, match="does not take"):
        build_model("unet", depth=3)
    with pytest.raises(ConfigError):
        build_model("unet", norm="group")
    with pytest.raises(ConfigError):
        build_model("cnnt", channels=10, heads=4)
    with pytest.raises(LivedenoiseError):
        build_preset("huge")


@pytest.mark.parametrize(
    "model",
    [UNet2D(widths=(4, 8)), UNet2D(widths=(4, 8, 16, 32)), CNNTUNet(channels=8, heads=2)],
    ids=["unet2", "unet4", "cnnt"],
)
def test_receptive_field_bound_is_honest(model: torch.nn.Module) -> None:
    """The analytic radius used for tile overlap is never smaller than the measured one."""
    analytic = receptive_field_radius(model)
    measured = empirical_receptive_field_radius(model)
    assert 0 < measured <= analytic
    assert analytic <= measured + 16  # and not wildly pessimistic


def test_receptive_field_of_standard_depth() -> None:
    assert receptive_field_radius(build_preset("standard")[0]) == 58
    assert receptive_field_radius(build_preset("fast")[0]) == 58


def test_default_networks_are_tile_safe() -> None:
    assert is_tile_safe(UNet2D()) and is_tile_safe(CNNTUNet())
    assert not is_tile_safe(UNet2D(norm="instance"))
    assert is_tile_safe(UNet2D(norm="layer")) and is_tile_safe(UNet2D(norm="batch"))


def test_translation_equivariance_on_alignment_grid() -> None:
    """Shifting the input by the alignment multiple shifts the output (away from borders)."""
    model = UNet2D(widths=(4, 8, 16), norm="layer").eval()
    x = torch.randn(1, 1, 96, 96)
    s = size_multiple(model)
    r = receptive_field_radius(model)
    with torch.no_grad():
        y = model(x)
        y_shift = model(torch.roll(x, shifts=(s, 2 * s), dims=(-2, -1)))
    inner = slice(r + 2 * s, 96 - r - 2 * s)
    torch.testing.assert_close(torch.roll(y, shifts=(s, 2 * s), dims=(-2, -1))[..., inner, inner],
                               y_shift[..., inner, inner], rtol=1e-5, atol=1e-5)


def test_widening_a_trained_unet_keeps_its_function_and_the_new_channels_learn() -> None:
    from livedenoise.checkpoint import load_backbone
    from livedenoise.models.widen import widen_unet

    fast = load_backbone("fast").model.eval()
    wide = widen_unet(fast, [32, 64, 128, 256]).eval()
    assert list(wide.widths) == [32, 64, 128, 256] and sum(p.numel() for p in wide.parameters()) > 3.5 * sum(
        p.numel() for p in fast.parameters())
    x = torch.rand(2, 1, 72, 88)
    with torch.no_grad():
        assert torch.allclose(wide(x), fast(x), atol=1e-5)
    # the channels that did not exist get gradients on their outgoing weights (they are not dead)
    wide.train()
    loss = (wide(x) - x.flip(-1)).pow(2).mean()
    loss.backward()
    assert float(wide.head.weight.grad[0, 16:].abs().sum()) > 0
    assert float(wide.decoders[0][0].weight.grad[:, 64:128].abs().sum()) > 0  # new up-sampled channels
    with pytest.raises(ConfigError, match="no level may get narrower"):
        widen_unet(wide, [16, 32, 64, 128])


def test_pretrain_grows_fast_into_standard_and_records_it(tmp_path) -> None:
    from livedenoise.checkpoint import load_backbone, load_checkpoint
    from livedenoise.training.pretrain import pretrain

    out = tmp_path / "grown.safetensors"
    res = pretrain("standard", init=load_backbone("fast"), bank_fields=3, bank_size=64, cache_dir=tmp_path,
                   batch_size=2, patch_size=32, max_steps=4, steps_per_validation=2, device="cpu", output=out)
    ck = load_checkpoint(out)
    assert ck.arch_kwargs["widths"] == [32, 64, 128, 256] and ck.name == "backbone-standard"
    stages = ck.training["stages"]
    assert "grown from backbone-fast (widths [16, 32, 64, 128])" in stages[-2]["note"]
    assert ck.training["total_steps"] == load_backbone("fast").training["total_steps"] + res.fit.steps


def test_measuring_the_receptive_field_restores_every_submodule_s_own_mode():
    """A wrapper in training mode around a network in inference mode (batch normalisation) stays that way."""
    import torch

    from livedenoise.models import empirical_receptive_field_radius

    inner = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.BatchNorm2d(1)).eval()
    outer = torch.nn.Sequential(inner)  # a new module is in training mode
    assert empirical_receptive_field_radius(outer) == 1
    assert outer.training and not inner.training and not inner[1].training
