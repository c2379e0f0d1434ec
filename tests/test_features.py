"""Decoder-layer numbering and feature hooks (dag_core.features) on the church-256 layout."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler

from dag_core.errors import DagError
from dag_core.features import (
    FeatureExtractor,
    decoder_layers,
    describe,
    main,
    noise_images,
    sample_pixels,
    unet_skeleton,
    upsample_concat,
)
from dag_core.unet_configs import CHURCH_256_SCHEDULER, TINY_CHANNELS, tiny_unet

SCALES = [32, 32, 16, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(32, seed=0).eval()


def test_church_layout_numbering(unet) -> None:
    layers = decoder_layers(unet)
    assert [layer.index for layer in layers] == list(range(18))
    assert [layer.scale for layer in layers] == SCALES
    reversed_channels = list(reversed(TINY_CHANNELS))
    assert [layer.channels for layer in layers] == [c for c in reversed_channels for _ in range(3)]
    names = [layer.module_name for layer in layers]
    assert names[3:6] == [
        "up_blocks.1.attentions.0",
        "up_blocks.1.attentions.1",
        "up_blocks.1.upsamplers.0",
    ]
    assert names[:3] == [
        "up_blocks.0.resnets.0",
        "up_blocks.0.resnets.1",
        "up_blocks.0.upsamplers.0",
    ]
    assert names[17] == "up_blocks.5.resnets.2"  # last block has no upsampler


def test_real_church_256_config_on_meta_device() -> None:
    unet = unet_skeleton("church-256")
    assert next(unet.parameters()).device.type == "meta"
    layers = decoder_layers(unet)
    assert len(layers) == 18
    # the paper's S = {2, 4, 5, 6, 7} sit at 16², 16², 32², 32², 32² for 256² images
    assert [256 // layers[k].scale for k in (2, 4, 5, 6, 7)] == [16, 16, 32, 32, 32]
    assert [layers[k].channels for k in (2, 4, 5, 6, 7)] == [512, 512, 512, 256, 256]
    table = describe(unet).splitlines()
    assert len(table) == 19
    assert table[3].split() == ["2", "up_blocks.0.upsamplers.0", "512", "16x16"]


def test_hooked_features_match_independent_observation(unet) -> None:
    """Each hooked output equals what the next module receives as input (pre-hooks)."""
    seen: dict[str, torch.Tensor] = {}

    def pre(name):
        def hook(_module, args):
            seen[name] = args[0].detach().clone()

        return hook

    handles = [
        unet.up_blocks[1].register_forward_pre_hook(pre("up1_in")),
        unet.up_blocks[1].resnets[1].register_forward_pre_hook(pre("up1_res1_in")),
        unet.up_blocks[3].resnets[1].register_forward_pre_hook(pre("up3_res1_in")),
        unet.conv_norm_out.register_forward_pre_hook(pre("norm_out_in")),
    ]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad(), FeatureExtractor(unet, [17, 2, 3, 9]) as extractor:
            _, (f17, f2, f3, f9) = extractor(x, 500)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(f2, seen["up1_in"])  # upsampled output of up block 0
    assert torch.equal(f3, seen["up1_res1_in"][:, : f3.shape[1]])  # after attention 0, pre-concat
    assert torch.equal(f9, seen["up3_res1_in"][:, : f9.shape[1]])
    assert torch.equal(f17, seen["norm_out_in"])
    for f, k in ((f2, 2), (f3, 3), (f9, 9), (f17, 17)):
        assert f.shape[-1] == 32 // SCALES[k]


def test_extractor_eps_is_plain_forward_and_hooks_are_removed(unet) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 900])
    with torch.no_grad():
        reference = unet(x, t).sample
        extractor = FeatureExtractor(unet, [2, 4, 5, 6, 7])
        eps, features = extractor(x, t)
    assert torch.equal(eps, reference)
    assert extractor.blocks == (2, 4, 5, 6, 7)
    assert [f.shape[1] for f in features] == [64, 64, 64, 32, 32]
    hooked = dict(unet.named_modules())["up_blocks.1.attentions.1"]
    assert len(hooked._forward_hooks) == 1
    extractor.close()
    assert len(hooked._forward_hooks) == 0
    with pytest.raises(DagError, match="closed"):
        extractor(x, t)


def test_features_only_forward_stops_after_the_last_requested_layer(unet) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([5, 400])
    ran: list[str] = []
    modules = dict(unet.named_modules())
    watch = [
        modules[name].register_forward_hook(lambda *_a, name=name: ran.append(name))
        for name in ("up_blocks.2.resnets.1", "up_blocks.2.upsamplers.0", "conv_out")
    ]
    try:
        with torch.no_grad(), FeatureExtractor(unet, [7, 2, 5]) as extractor:
            _, full = extractor(x, t)
            ran.clear()
            early = extractor.features(x, t)
            assert ran == ["up_blocks.2.resnets.1"]  # layer 7 ran, nothing after it
            eps, again = extractor(x, t)  # a full forward still runs to the end
    finally:
        for handle in watch:
            handle.remove()
    assert [f.shape for f in early] == [f.shape for f in full]
    assert all(torch.equal(a, b) for a, b in zip(early, full, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(again, full, strict=True))
    assert eps.shape == x.shape and "conv_out" in ran


def test_out_of_range_block(unet) -> None:
    with pytest.raises(DagError, match=r"decoder layer 18 out of range 0\.\.17"):
        FeatureExtractor(unet, [2, 18])
    with pytest.raises(DagError, match="decoder layer -1"):
        FeatureExtractor(unet, [-1])


def test_features_keep_the_graph(unet) -> None:
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with FeatureExtractor(unet, [6]) as extractor:
        _, (feature,) = extractor(x, 10)
    feature.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_upsample_concat_and_pixel_sampling_agree() -> None:
    generator = torch.Generator().manual_seed(3)
    features = [
        torch.randn(2, 4, 4, 4, generator=generator),
        torch.randn(2, 3, 8, 8, generator=generator),
    ]
    g = upsample_concat(features, 32)
    assert g.shape == (2, 7, 32, 32)
    assert torch.equal(upsample_concat([features[1]], (8, 8)), features[1])
    pixels = torch.randint(0, 32 * 32, (2, 100), generator=generator)
    sampled = sample_pixels(features, pixels, 32)
    expected = g.flatten(2).gather(2, pixels[:, None, :].expand(-1, 7, -1))
    assert sampled.shape == (2, 7, 100, 1)
    torch.testing.assert_close(sampled[..., 0], expected, atol=1e-5, rtol=1e-5)


def test_noise_images_uses_the_scheduler() -> None:
    scheduler = DDPMScheduler(**CHURCH_256_SCHEDULER)
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 999])
    a = noise_images(scheduler, x0, t, torch.Generator().manual_seed(0))
    b = noise_images(scheduler, x0, t, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, scheduler.add_noise(x0, noise, t))
    assert (a[0] - x0[0]).abs().max() < 0.05  # t = 0: almost clean
    assert (a[1] - x0[1]).abs().mean() > 0.5  # t = 999: almost pure noise


def test_cli_describe(tmp_path, capsys) -> None:
    assert main(["--describe", "church-256"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 19 and "up_blocks.1.attentions.0" in out[4]

    unet = tiny_unet(32)
    unet.save_config(tmp_path / "pipe" / "unet")
    assert main(["--describe", str(tmp_path / "pipe")]) == 0
    assert "16x16" in capsys.readouterr().out  # layer 11 at 32² input

    assert main(["--describe", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing" in err

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"block_out_channels": "nonsense"}))
    assert main(["--describe", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
