"""Effects with uncertainty: bootstrap FID (fast path = torch-fidelity), paired CIs, consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dag_core.errors import DagError
from dag_core.metrics.effect import (
    Interval,
    RealFeatures,
    consistency,
    fast_fid,
    fid_bootstrap,
    fid_gap,
    fid_value,
    kid_prc,
    mean_bootstrap,
    verdict,
)

D = 64


def _features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)) * np.linspace(0.2, 2.0, D) + shift


@pytest.fixture(scope="module")
def real() -> RealFeatures:
    return RealFeatures(_features(120, 0))


@pytest.mark.parametrize("n", [20, 80, 200])  # fewer, about as many and more samples than D
def test_fast_fid_equals_torch_fidelity(real: RealFeatures, n: int) -> None:
    gen = _features(n, 1, shift=0.3)
    assert fast_fid(gen, real) == pytest.approx(fid_value(gen, real), rel=1e-6, abs=1e-6)


def test_reported_fid_is_torch_fidelity_s(real: RealFeatures) -> None:
    gen, other = _features(40, 7, shift=0.1), _features(40, 8, shift=0.3)
    point, diff = fid_bootstrap(gen, real, n_boot=20, paired_with=other)
    assert point.value == pytest.approx(fid_value(gen, real), rel=1e-6)
    assert diff is not None
    assert diff.value == pytest.approx(fid_value(gen, real) - fid_value(other, real), rel=1e-6)


def test_fid_ci_brackets_the_estimate_and_shrinks_with_n(real: RealFeatures) -> None:
    small, _ = fid_bootstrap(_features(30, 2, 0.2), real, n_boot=200)
    large, _ = fid_bootstrap(_features(300, 2, 0.2), real, n_boot=200)
    for interval in (small, large):
        assert interval.lo < interval.value < interval.hi
    assert large.hi - large.lo < small.hi - small.lo


def test_paired_difference(real: RealFeatures) -> None:
    base = _features(60, 3, shift=0.1)
    far = base + 0.5  # every sample moved away from the real mean
    _, same = fid_bootstrap(base, real, n_boot=100, paired_with=base)
    assert same is not None and same.value == 0 and same.lo == 0 and same.hi == 0
    assert verdict(same) == "no difference"
    _, worse = fid_bootstrap(far, real, n_boot=100, paired_with=base)
    assert worse is not None and worse.lo > 0 and verdict(worse) == "higher"
    with pytest.raises(DagError, match="equal sample counts"):
        fid_bootstrap(base, real, n_boot=100, paired_with=base[:10])


def test_fid_gap_to_a_real_floor(real: RealFeatures) -> None:
    floor = _features(60, 7)  # held-out draws of the real distribution, same count
    far = _features(60, 8, shift=0.6)
    gap, rel = fid_gap(far, floor, real, n_boot=200)
    expected = fid_value(far, real) - fid_value(floor, real)
    assert gap.value == pytest.approx(expected) and gap.lo > 0  # clearly above the floor
    assert rel.value == pytest.approx(expected / fid_value(far, real))
    assert rel.lo <= rel.value <= rel.hi < 1
    # a set drawn like the floor itself has no headroom: its gap CI contains 0
    same, _ = fid_gap(_features(60, 9), floor, real, n_boot=200)
    assert same.lo < 0 < same.hi
    with pytest.raises(DagError, match="as many real samples"):
        fid_gap(far, floor[:30], real, n_boot=50)


def test_mean_bootstrap_and_verdicts() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    shifted = mean_bootstrap(a - 0.5, paired_with=a, n_boot=200)
    assert shifted.value == pytest.approx(-0.5) and shifted.hi < 0 and verdict(shifted) == "lower"
    noise = mean_bootstrap(rng.normal(size=50), n_boot=200)
    assert noise.lo < 0 < noise.hi and verdict(noise) == "no difference"
    assert verdict(Interval(1.0, 0.5, 2.0)) == "higher"
    with pytest.raises(DagError, match="at least 10 resamples"):
        mean_bootstrap(a, n_boot=3)


def test_mean_bootstrap_over_runs_and_samples() -> None:
    """(runs, N) values: one run is the 1-D bootstrap; a run-to-run offset widens the CI beyond
    the sample-only CI of the same pooled values, and the point estimate stays the grand mean."""
    rng = np.random.default_rng(1)
    a = rng.normal(0.1, 1.0, size=300)
    one = mean_bootstrap(a[None], n_boot=300, seed=4)
    assert one == mean_bootstrap(a, n_boot=300, seed=4)
    runs = rng.normal(0.0, 1.0, size=(4, 300)) + np.array([[-0.6], [0.5], [0.9], [-0.4]])
    crossed = mean_bootstrap(runs, n_boot=1000)
    pooled = mean_bootstrap(runs.ravel(), n_boot=1000)
    assert crossed.value == pytest.approx(runs.mean()) == pytest.approx(pooled.value)
    assert crossed.hi - crossed.lo > 3 * (pooled.hi - pooled.lo)
    paired = mean_bootstrap(runs - 0.2, paired_with=runs, n_boot=200)
    assert paired.value == pytest.approx(-0.2) and paired.lo == pytest.approx(-0.2)
    with pytest.raises(DagError, match=r"\(runs, N\)"):
        mean_bootstrap(np.zeros((2, 3, 4)), n_boot=50)


def test_consistency_hand_computed() -> None:
    labels = np.array([[[1.0, 2.0]], [[3.0, 3.0]]])
    estimates = np.array([[[1.0, 4.0]], [[2.0, 3.0]]])
    out = consistency(labels, estimates)
    # sample 0: (0 + 2/4) / 2 = 0.25, ratios 1, 2 → δ 0.5; sample 1: (0.5 + 0) / 2, ratios 1.5, 1
    assert np.allclose(out["abs_rel"], [0.25, 0.25])
    assert np.allclose(out["delta1"], [0.5, 0.5])
    with pytest.raises(DagError, match="positive"):
        consistency(labels * 0, estimates)
    with pytest.raises(DagError, match=r"\(N, H, W\)"):
        consistency(labels[0], estimates[0])


def test_kid_and_precision_recall(real: RealFeatures) -> None:
    close = kid_prc(_features(100, 5), real)
    far = kid_prc(_features(100, 5, shift=3.0), real)
    assert far["kid_mean"] > close["kid_mean"] + 3 * close["kid_std"]
    assert close["precision"] > far["precision"] and close["recall"] > far["recall"]


def test_scorer_counts_nonfinite_labels_instead_of_failing(tmp_path) -> None:
    """A guided sample that diverged (NaN depth label) is scored, counted, and not an error."""
    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DepthNet, DownstreamConfig, save_depth_net
    from dag_core.metrics.scorer import Scorer

    config = DownstreamConfig(resolution=32, channels=(8, 16))
    torch_net = DepthNet(config.channels)
    save_depth_net(torch_net, config, DepthNorm(min_depth=0.25, max_depth=10.0), tmp_path / "est")
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    scorer = Scorer(real, tmp_path / "est", n_boot=20)
    rgb = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = rng.uniform(1.0, 5.0, (6, 32, 32)).astype(np.float32)
    clean = scorer.features(rgb, labels)
    labels[1, 3, 4] = np.nan
    labels[4] = np.nan
    broken = scorer.features(rgb, labels)
    assert clean.nonfinite_labels == 0 and broken.nonfinite_labels == 2
    assert np.isfinite(broken.consistency["abs_rel"]).all()
    assert broken.consistency["abs_rel"][0] == clean.consistency["abs_rel"][0]
    assert broken.consistency["abs_rel"][4] != clean.consistency["abs_rel"][4]
    row, _ = scorer.summary(broken)
    assert row["labels_nonfinite"] == 2
    gaps = scorer.gap(broken, clean)
    assert set(gaps) >= {"dfid_gap", "dfid_gap_ci_lo", "fid_gap_rel", "fid_gap_rel_ci_hi"}
    assert gaps["fid_gap"] == 0.0  # same images: no gap


def test_real_features_are_stored_once_and_read_only_for_the_same_inputs(tmp_path) -> None:
    """The reference stage's stored real-set features are read back by a Scorer on the same
    images, estimator, extractor, batch size and device; anything else recomputes them."""
    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DepthNet, DownstreamConfig, save_depth_net
    from dag_core.metrics.scorer import REAL_FEATURES_FILE, Scorer

    config = DownstreamConfig(resolution=32, channels=(8, 16))
    est = tmp_path / "est"
    save_depth_net(DepthNet(config.channels), config, DepthNorm(), est)
    real = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    first = Scorer(real, est, n_boot=20, batch_size=5)
    assert not first.real_stored and first.real_source == "computed"
    first.save_real(est / REAL_FEATURES_FILE)
    again = Scorer(real, est, n_boot=20, batch_size=5)
    assert again.real_stored and again.real_source == "read from the estimator's folder"
    assert np.array_equal(again.real_images.features, first.real_images.features)
    assert np.array_equal(again.real_depth.features, first.real_depth.features)
    other = real.copy()
    other[0, 0, 0, 0] ^= 1  # one pixel of one image differs
    assert not Scorer(other, est, n_boot=20, batch_size=5).real_stored
    assert not Scorer(real, est, n_boot=20, batch_size=2).real_stored
    torch.manual_seed(5)
    save_depth_net(DepthNet(config.channels), config, DepthNorm(), est)  # other weights
    assert not Scorer(real, est, n_boot=20, batch_size=5).real_stored
    (est / REAL_FEATURES_FILE).write_bytes(b"damaged")
    with pytest.raises(DagError, match="damaged real-set features"):
        Scorer(real, est, n_boot=20, batch_size=5)
