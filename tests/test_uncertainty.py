"""Label uncertainty (dag_core.uncertainty): the per-pixel disagreement, the top-10 % score, and
the ``uncertainty`` every synthesized row stores, recomputed here from the saved models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dag_core.errors import DagError
from dag_core.features import FeatureExtractor, upsample_concat
from dag_core.guidance import DepthGuidance
from dag_core.heads import DepthHeads, predict_depth
from dag_core.sampling import make_scheduler, sample
from dag_core.shards import read_pandas, read_samples
from dag_core.synthesis import SynthesisSpec, guidance_config, load_models, render_shard
from dag_core.uncertainty import (
    TOP_FRACTION,
    label_uncertainty,
    pixel_uncertainty,
    top_fraction_mean,
)
from tests.tiny_models import write_tiny_models

VARIANTS = {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100}}


def test_pixel_uncertainty_and_the_top_ten_percent_score() -> None:
    d_s = torch.tensor([[[[0.5, -0.25], [1.0, 0.0]]]])
    d_w = torch.tensor([[[[0.25, 0.25], [0.0, 0.0]]]])
    assert pixel_uncertainty(d_s, d_w).tolist() == [[[[0.25, 0.5], [1.0, 0.0]]]]
    members = torch.stack([d_s, d_w, d_w + 1])  # (K=3, B=1, 1, 2, 2)
    want = np.std(members.numpy(), axis=0)  # population std over the members
    np.testing.assert_allclose(pixel_uncertainty(d_s, d_w, members).numpy(), want, rtol=1e-6)
    assert torch.equal(pixel_uncertainty(d_s, d_w, members[:1]), pixel_uncertainty(d_s, d_w))

    u = torch.stack([torch.arange(1.0, 101.0), torch.arange(100.0, 0.0, -1)]).view(2, 1, 10, 10)
    assert top_fraction_mean(u).tolist() == [95.5, 95.5]  # mean of 91 … 100: floor(0.1·100) px
    assert top_fraction_mean(torch.ones(1, 1, 3, 3) * 2).tolist() == [2.0]  # at least one pixel
    assert top_fraction_mean(u.view(2, 100)[:, :19]).tolist() == [19.0, 100.0]  # floor(1.9) = 1
    u[1, 0, 0, 0] = float("nan")
    assert top_fraction_mean(u).tolist() == [95.5, float("inf")]  # a broken label goes first
    assert TOP_FRACTION == 0.1
    with pytest.raises(DagError, match="fraction"):
        top_fraction_mean(u, 0.0)
    with pytest.raises(DagError, match="shapes differ"):
        pixel_uncertainty(d_s, d_w[..., :1])


def _reference_score(heads: DepthHeads, features: list[torch.Tensor]) -> np.ndarray:
    """ddpm-segmentation's rule written out in numpy: |d^S − d^W| (or the members' std), sort
    each image's pixels, mean of the largest int(n / 10)."""
    by_block = dict(zip(heads.blocks, features, strict=True))
    g_s = upsample_concat([by_block[k] for k in heads.config.strong_blocks], heads.resolution)
    g_w = upsample_concat([by_block[k] for k in heads.config.weak_blocks], heads.resolution)
    members = np.stack([m(g_s, 0).numpy() for m in heads.strong_members]).astype(np.float64)
    if len(members) > 1:
        u = members.std(axis=0)
    else:
        u = np.abs(members[0] - heads.weak(g_w, 0).numpy().astype(np.float64))
    flat = np.sort(u.reshape(u.shape[0], -1), axis=1)[:, ::-1]
    return flat[:, : flat.shape[1] // 10].mean(axis=1)


@pytest.mark.parametrize("ensemble", [1, 3])
def test_synthesized_rows_store_the_top_ten_percent_score_of_their_label(
    tmp_path: Path, ensemble: int
) -> None:
    """Unguided and guided rows alike: the stored score is the top-10 % mean of the per-pixel
    uncertainty of the stored label, recomputed from the saved models and the same samples; the
    label itself is the strong head's depth at t = 0, bit for bit as before the score existed."""
    paths = write_tiny_models(tmp_path / "models")
    if ensemble > 1:  # the same tiny layout with K strong members
        single = DepthHeads.load(paths["heads"])
        torch.manual_seed(0)
        heads = DepthHeads(
            replace(single.config, ensemble=ensemble),
            single.norm,
            single.layer_channels,
            single.resolution,
            base_hash=single.base_hash,
        ).eval()
        heads.save(paths["heads"])
    models = load_models(paths["base_model"], paths["heads"], paths["prior"])
    spec = SynthesisSpec(
        num_samples=3, shard_size=3, seed=5, steps=3, variants=VARIANTS, hashes=models.hashes
    )
    heads = DepthHeads.load(paths["heads"])  # as saved, independent of the renderer's copy
    assert heads.config.ensemble == ensemble
    for variant in VARIANTS:
        out = tmp_path / variant
        render_shard(models, spec, variant, 0, out, batch_size=2)
        rows = list(read_samples(out, verify=False))
        scores = np.array([r.uncertainty for r in rows])
        assert scores.dtype == np.float64 and (scores > 0).all() and np.isfinite(scores).all()

        # the same samples again (same seeds, same sampler and guidance), then the rule by hand
        config = guidance_config(variant, spec.variants[variant])
        guidance = (
            DepthGuidance(models.unet, models.heads, models.prior, config)
            if config.enabled
            else None
        )
        for chunk in (rows[:2], rows[2:]):  # the renderer's batches (batch_size=2)
            scheduler = make_scheduler(models.scheduler, spec.sampler, spec.steps)
            seeds = [r.seed for r in chunk]
            images = sample(models.unet, scheduler, seeds, guidance=guidance).images
            rgb = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            assert all(np.array_equal(r.rgb, x) for r, x in zip(chunk, rgb, strict=True))
            t0 = torch.zeros(len(chunk), dtype=torch.long)
            with torch.no_grad(), FeatureExtractor(models.unet, heads.blocks) as extractor:
                _, features = extractor(images, t0)
                want = _reference_score(heads, features)
                _, d_strong, d_weak = predict_depth(models.unet, heads, images, t0)
            got = np.array([r.uncertainty for r in chunk])
            np.testing.assert_allclose(got, want, rtol=2e-6)
            # the label is the one final_depth gave before (predict_depth at t = 0), float16
            label = heads.norm.denormalize(d_strong)[:, 0].numpy().astype(np.float16)
            for row, want_depth in zip(chunk, label, strict=True):
                assert np.array_equal(row.depth, want_depth.astype(np.float32))
            if ensemble == 1:  # the library's own function on the same heads' outputs
                mine = label_uncertainty(d_strong, d_weak).numpy()
                np.testing.assert_array_equal(np.float32(got), mine)
    frame = read_pandas(tmp_path / "dag", verify=False)
    assert frame["uncertainty"].notna().all()


def test_heads_labeller_gives_the_labels_synthesis_stores(tmp_path: Path) -> None:
    """The downstream diagnostic's (real images, head labels) re-labelling uses the same rule as
    synthesis: the labeller applied to stored images returns the stored float16 labels, up to the
    uint8 rounding of the images (synthesis labels the float x_0 before it is stored)."""
    from dag_core.downstream.relabel import heads_labeller

    paths = write_tiny_models(tmp_path / "models")
    models = load_models(paths["base_model"], paths["heads"], paths["prior"])
    spec = SynthesisSpec(
        num_samples=2, shard_size=2, seed=3, steps=2, variants=VARIANTS, hashes=models.hashes
    )
    render_shard(models, spec, "unguided", 0, tmp_path / "u", batch_size=2)
    rows = list(read_samples(tmp_path / "u", verify=False))
    label = heads_labeller(paths["base_model"], paths["heads"])
    depth = label(np.stack([r.rgb for r in rows]))
    assert depth.shape == (2, *rows[0].depth.shape)
    for row, got in zip(rows, depth, strict=True):
        np.testing.assert_allclose(got, row.depth, rtol=5e-3, atol=0)
    with pytest.raises(DagError, match="base model takes"):
        label(np.zeros((1, 8, 8, 3), np.uint8))
