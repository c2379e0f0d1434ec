"""FID / dFID through torch-fidelity with the offline fid-helper Inception-v3 extractor.

Inception-v3 runs at 299×299 whatever the input size, so on CPU every image costs a full forward
pass: the sets are tiny (4 images), the expensive FID values are computed once per module, and
the module runs single-threaded (intra-op threads spin-waiting on a shared CPU cost far more time
than they save on these small batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

import dag_core.metrics.fid as fid_module
from dag_core.errors import DagError
from dag_core.metrics.fid import (
    FIDHELPER_EXTRACTOR,
    TORCH_FIDELITY_EXTRACTOR,
    FidHelperInceptionV3,
    depth_to_rgb8,
    dfid,
    fid,
    fid_from_statistics,
    fid_statistics,
    fidhelper_weights,
    inception_features,
    resolve_extractor,
    torch_fidelity_weights,
)

N_IMAGES, SIZE = 4, 32


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_images(seed: int) -> torch.Tensor:
    """uint8 (N, 3, SIZE, SIZE): per-image colour, gradient and texture."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(N_IMAGES, 3, 1, 1, generator=g) * 180
    ramp = torch.linspace(0, 1, SIZE)[None, None, :, None] * torch.rand(
        N_IMAGES, 1, 1, 1, generator=g
    )
    texture = torch.rand(N_IMAGES, 3, SIZE, SIZE, generator=g) * 40
    return (colour + 60 * ramp + texture).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images(0)


@pytest.fixture(scope="module")
def shifted(images: torch.Tensor) -> torch.Tensor:
    """Brighter, lower-contrast and noisier versions of the same images."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(images.shape, generator=g) * 12
    return (images.float() * 0.6 + 90 + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def fid_values(images: torch.Tensor, shifted: torch.Tensor) -> dict[str, float]:
    """The only full FID runs of this module (3 × 2 × N_IMAGES Inception passes)."""
    nhwc = images.permute(0, 2, 3, 1).numpy()
    return {
        "self": fid(images, images, batch_size=N_IMAGES),
        "shifted_one_batch": fid(images, shifted, batch_size=N_IMAGES),
        # batches of 3 + 1, channels-last numpy input for the first set
        "shifted_batches_of_3": fid(nhwc, shifted, batch_size=3),
    }


def test_fid_of_a_set_with_itself_is_zero(fid_values: dict[str, float]):
    assert abs(fid_values["self"]) < 1e-2


def test_fid_against_shifted_set_is_positive(fid_values: dict[str, float]):
    assert fid_values["shifted_one_batch"] > 1.0
    assert fid_values["shifted_one_batch"] > 100 * abs(fid_values["self"])


def test_fid_is_independent_of_batch_size_and_layout(fid_values: dict[str, float]):
    a, b = fid_values["shifted_one_batch"], fid_values["shifted_batches_of_3"]
    assert abs(a - b) / abs(a) < 1e-4


def test_statistics_path_equals_calculate_metrics(
    images: torch.Tensor, shifted: torch.Tensor, fid_values: dict[str, float]
):
    """Reference statistics computed once and reused give the same FID as a full run."""
    a = fid_statistics(images, batch_size=N_IMAGES)
    b = fid_statistics(shifted, batch_size=3)
    assert a["mu"].shape == (2048,) and b["sigma"].shape == (2048, 2048)
    value = fid_from_statistics(a, b)
    assert value == pytest.approx(fid_values["shifted_one_batch"], rel=1e-4)


def test_feature_extraction_reports_its_progress(images: torch.Tensor) -> None:
    """``progress`` is told the images read, up to all of them; the features are unchanged."""
    seen: list[int] = []
    features = inception_features(images[:3], batch_size=2, progress=seen.append)
    assert max(seen) == 3 and seen[-1] == 3 and set(seen) == {1, 2, 3}
    assert np.array_equal(features, inception_features(images[:3], batch_size=2))


def tf1_resize(x: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)`` of (..., H, W), written out:
    output pixel i samples source coordinate i · in / out (no half-pixel offset), clamped."""
    for axis in (-2, -1):
        n_in = x.shape[axis]
        src = np.arange(size) * (n_in / size)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = src - lo
        shape = [1] * x.ndim
        shape[axis] = size
        w = w.reshape(shape)
        x = np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    return x


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_fidhelper_extractor_matches_the_torchscript_module(images: torch.Tensor):
    assert FEATURE_EXTRACTORS_REGISTRY[FIDHELPER_EXTRACTOR] is FidHelperInceptionV3
    # built the way torch-fidelity builds it inside calculate_metrics
    extractor = create_feature_extractor(FIDHELPER_EXTRACTOR, ["2048"], cuda=False)
    batch = images[:1]
    with torch.no_grad():
        (features,) = extractor(batch)
        net = torch.jit.load(str(fidhelper_weights()), map_location="cpu").eval()
        resized = tf1_resize(batch.numpy().astype(np.float64), 299)
        direct = net(torch.from_numpy((resized - 128) / 128).float())
    assert features.shape == (1, 2048) and features.dtype == torch.float32
    assert features.abs().sum() > 0
    torch.testing.assert_close(features, direct, rtol=1e-4, atol=1e-4)


def test_fidhelper_extractor_contract():
    assert FidHelperInceptionV3.get_provided_features_list() == ("2048",)
    for metric in ("fid", "kid", "prc"):
        assert FidHelperInceptionV3.get_default_feature_layer_for_metric(metric) == "2048"
    with pytest.raises(DagError, match="isc"):
        FidHelperInceptionV3.get_default_feature_layer_for_metric("isc")
    dummy = FidHelperInceptionV3.get_dummy_input_for_compile()
    assert dummy.dtype == torch.uint8 and dummy.shape[:2] == (1, 3)


def test_resolve_extractor_without_and_with_cached_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torch_fidelity_weights()
    assert weights.is_relative_to(tmp_path) and weights.name.startswith("weights-inception")
    assert resolve_extractor() == FIDHELPER_EXTRACTOR
    assert resolve_extractor(FIDHELPER_EXTRACTOR) == FIDHELPER_EXTRACTOR
    with pytest.raises(DagError, match="not cached"):
        resolve_extractor(TORCH_FIDELITY_EXTRACTOR)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")  # only its presence is checked; nothing is loaded here
    assert resolve_extractor("auto") == TORCH_FIDELITY_EXTRACTOR
    assert resolve_extractor(TORCH_FIDELITY_EXTRACTOR) == TORCH_FIDELITY_EXTRACTOR
    with pytest.raises(DagError, match="unknown FID extractor 'vgg16'"):
        resolve_extractor("vgg16")


def test_resolve_extractor_in_this_environment():
    assert resolve_extractor() in FEATURE_EXTRACTORS_REGISTRY


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "at least 2"),
        (torch.zeros(4, 3, 8, 8), "uint8"),
        (np.zeros((4, 8, 8), dtype=np.uint8), "(N, H, W, 3)"),
        (np.zeros((4, 8, 8, 4), dtype=np.uint8), "(N, H, W, 3)"),
    ],
)
def test_fid_rejects_bad_images(bad, needle, images: torch.Tensor):
    with pytest.raises(DagError) as exc:
        fid(bad, images)
    assert needle in str(exc.value)
    with pytest.raises(DagError):
        fid(images, bad)


def test_fid_rejects_bad_batch_size(images: torch.Tensor):
    with pytest.raises(DagError, match="batch_size"):
        fid(images, images, batch_size=0)


def expected_gray(d: float, lo: float = 0.5, hi: float = 10.0) -> int:
    """Hand formula: 255 · (ln hi − ln d) / (ln hi − ln lo), d clamped to [lo, hi]."""
    d = min(max(d, lo), hi)
    return round(255 * (math.log(hi) - math.log(d)) / (math.log(hi) - math.log(lo)))


def test_depth_to_rgb8_uses_one_global_log_range():
    near_room = np.array([[[1.0, 1.5], [2.0, 2.0]]], dtype=np.float32)  # spans 1–2 m
    far_room = np.array([[[2.0, 4.0], [8.0, 0.5]]], dtype=np.float32)  # spans 0.5–8 m
    a, b = depth_to_rgb8(near_room), depth_to_rgb8(far_room)
    assert a.dtype == torch.uint8 and a.shape == (1, 3, 2, 2)
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])
    # 2 m is the same gray in both maps, whatever else each map contains
    assert int(a[0, 0, 1, 0]) == int(b[0, 0, 0, 0]) == expected_gray(2.0)
    for depth, gray in ((near_room, a), (far_room, b)):
        want = [[expected_gray(float(v)) for v in row] for row in depth[0]]
        assert gray[0, 0].tolist() == want
    # the ends of the range, and clamping beyond them (0 = no reading → nearest)
    ends = depth_to_rgb8(torch.tensor([[[[0.5, 10.0, 0.0, 50.0]]]]))  # (N, 1, H, W)
    assert ends[0, 0, 0].tolist() == [255, 0, 255, 0]
    # a different global range changes the mapping
    assert int(depth_to_rgb8(near_room, min_depth=0.25)[0, 0, 1, 0]) == expected_gray(2.0, lo=0.25)


def test_depth_to_rgb8_rejects_bad_input():
    with pytest.raises(DagError, match="non-finite"):
        depth_to_rgb8(np.array([[[1.0, np.nan]]]))
    with pytest.raises(DagError, match=r"\(N, H, W\)"):
        depth_to_rgb8(np.ones((2, 2)))
    with pytest.raises(DagError, match="min_depth"):
        depth_to_rgb8(np.ones((1, 2, 2)), min_depth=3.0, max_depth=2.0)


def test_dfid_is_fid_of_rendered_depth(monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_fid(a, b, **kwargs):
        calls.append((a, b, kwargs))
        return 42.0

    monkeypatch.setattr(fid_module, "fid", fake_fid)
    rng = np.random.default_rng(0)
    depth_a = rng.uniform(0.3, 12.0, size=(3, 8, 8)).astype(np.float32)
    depth_b = torch.from_numpy(rng.uniform(1.0, 5.0, size=(3, 1, 8, 8)))
    got = dfid(depth_a, depth_b, min_depth=0.25, max_depth=10.0, batch_size=7, extractor="auto")
    assert got == 42.0 and len(calls) == 1
    a, b, kwargs = calls[0]
    assert torch.equal(a, depth_to_rgb8(depth_a, min_depth=0.25, max_depth=10.0))
    assert torch.equal(b, depth_to_rgb8(depth_b, min_depth=0.25, max_depth=10.0))
    assert kwargs == {"batch_size": 7, "extractor": "auto"}
