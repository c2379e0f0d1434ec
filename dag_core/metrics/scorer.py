"""Score generated image–depth sets against real ones: dFID, FID, KID, P/R, consistency, with CIs.

dFID (DAG paper §5) is the FID between depth maps that ONE reference estimator predicts from the
generated images and from the real images; FID is reported beside it. :class:`Scorer` extracts
the real set's Inception features once (images, and the estimator's depth rendered by
:func:`~dag_core.metrics.fid.depth_to_rgb8`), then :meth:`Scorer.features` turns each generated
set into its features plus the per-sample image–label consistency (the sample's stored depth
label vs the estimator's depth on its image), and :meth:`Scorer.summary` reports each number with
a bootstrap CI and, against a reference variant with the same seeds (``unguided``), the paired
difference with its CI and a verdict (:mod:`dag_core.metrics.effect`).

Like FID's precomputed reference statistics, the real set's features can be stored once
(:meth:`Scorer.save_real`, by the reference stage, as ``real_features.npz`` in the estimator's
folder) and are then read instead of recomputed by every stage that scores against that set. The
file is used only when its key matches: a hash of the real images, the estimator's weights, the
extractor, its batch size and the device type (:func:`real_key`); otherwise the features are
computed as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dag_core.atomic import atomic_path
from dag_core.depthnet import WEIGHTS_FILE, load_depth_net, predict_depth
from dag_core.errors import DagError
from dag_core.metrics.effect import (
    RealFeatures,
    consistency,
    fid_bootstrap,
    fid_gap,
    kid_prc,
    mean_bootstrap,
    verdict,
)
from dag_core.metrics.fid import depth_to_rgb8, inception_features

ESTIMATOR_CHUNK = 64
#: the real set's features, stored in the estimator's folder (:meth:`Scorer.save_real`)
REAL_FEATURES_FILE = "real_features.npz"


def real_key(
    real_rgb: np.ndarray, estimator: str | Path, extractor: str, batch_size: int, device: str
) -> str:
    """What the real set's features depend on, hashed: images, estimator weights, extractor,
    batch size and device type."""
    h = hashlib.sha256()
    h.update(repr((np.shape(real_rgb), str(np.asarray(real_rgb).dtype))).encode())
    h.update(np.ascontiguousarray(real_rgb).tobytes())
    h.update((Path(estimator) / WEIGHTS_FILE).read_bytes())
    h.update(f"{extractor}|{batch_size}|{torch.device(device).type}".encode())
    return h.hexdigest()


def _stored_real(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, depth) features from ``path`` when it holds them for ``key``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            if str(stored["key"]) != key:
                return None
            return stored["images"], stored["depth"]
    except (OSError, ValueError, KeyError) as exc:
        raise DagError(f"damaged real-set features {path}: {exc}; delete it to recompute") from exc


@dataclass
class GeneratedSet:
    """Features of one generated set, and per-sample consistency (None without depth labels)."""

    image_features: np.ndarray
    depth_features: np.ndarray
    consistency: dict[str, np.ndarray] | None
    #: samples whose stored depth label has a non-finite pixel (a diverged guided sample); those
    #: pixels are scored as the far end of the depth range
    nonfinite_labels: int = 0

    @property
    def n(self) -> int:
        return len(self.image_features)


class Scorer:
    """The real set's features (computed once) and a reference depth estimator, on ``device``
    (Inception and the estimator; the statistics are computed in float64 on the CPU)."""

    def __init__(
        self,
        real_rgb: np.ndarray,
        estimator: str | Path,
        *,
        extractor: str = "auto",
        batch_size: int = 50,
        n_boot: int = 500,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        self.net, net_config, self.norm = load_depth_net(estimator)
        self.device = torch.device(device or "cpu")
        self.net.to(self.device)
        self.resolution = net_config.resolution
        self.kw: dict[str, Any] = {
            "batch_size": batch_size,
            "extractor": extractor,
            "device": self.device,
        }
        self.n_boot, self.seed = n_boot, seed
        self.n_real = len(real_rgb)
        self.key = real_key(real_rgb, estimator, extractor, batch_size, str(self.device))
        stored = _stored_real(Path(estimator) / REAL_FEATURES_FILE, self.key)
        #: whether the real features were read from the estimator's folder
        self.real_stored = stored is not None
        if stored is None:
            stored = (
                inception_features(real_rgb, **self.kw),
                self._depth_features(self.estimate(real_rgb)),
            )
        self.real_images, self.real_depth = RealFeatures(stored[0]), RealFeatures(stored[1])

    @property
    def real_source(self) -> str:
        """Where the real features came from, for a log line."""
        return "read from the estimator's folder" if self.real_stored else "computed"

    def save_real(self, path: str | Path) -> Path:
        """Store the real set's features with their :func:`real_key` (atomically); returns
        ``path``. A Scorer built later on the same real set, estimator folder, extractor, batch
        size and device type reads them from ``{estimator}/`` :data:`REAL_FEATURES_FILE`."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                key=np.array(self.key),
                images=self.real_images.features,
                depth=self.real_depth.features,
            )
        return Path(path)

    def estimate(self, rgb: np.ndarray) -> np.ndarray:
        """The reference estimator's depth (N, H, W) in metres for uint8 images (N, H, W, 3)."""
        chunks = [rgb[i : i + ESTIMATOR_CHUNK] for i in range(0, len(rgb), ESTIMATOR_CHUNK)]
        return np.concatenate(
            [predict_depth(self.net, c, self.norm, self.resolution) for c in chunks]
        )

    def _depth_features(self, depth: np.ndarray) -> np.ndarray:
        lo, hi = self.norm.min_depth, self.norm.max_depth
        return inception_features(depth_to_rgb8(depth, min_depth=lo, max_depth=hi), **self.kw)

    def features(self, rgb: np.ndarray, labels: np.ndarray | None = None) -> GeneratedSet:
        """Features of generated images (N, H, W, 3) uint8; ``labels`` (N, h, w) metres are the
        samples' stored depth, compared with the estimator's depth (resized to h×w if needed).
        Non-finite label pixels (a sample that diverged under strong guidance) are scored as
        ``max_depth`` and counted (``labels_nonfinite`` in :meth:`summary`), not an error."""
        estimated = self.estimate(rgb)
        scores, nonfinite = None, 0
        if labels is not None:
            labels = np.asarray(labels, dtype=np.float32)
            if labels.ndim != 3 or len(labels) != len(rgb):
                raise DagError(
                    f"need one (h, w) depth label per image, got {labels.shape} for {len(rgb)}"
                )
            est = torch.from_numpy(estimated)[:, None]
            if est.shape[-2:] != labels.shape[-2:]:
                est = F.interpolate(est, size=labels.shape[-2:], mode="bilinear", antialias=True)
            lo, hi = self.norm.min_depth, self.norm.max_depth
            bad = ~np.isfinite(labels)
            nonfinite = int(bad.reshape(len(labels), -1).any(axis=1).sum())
            labels = np.where(bad, hi, labels)
            scores = consistency(np.clip(labels, lo, hi), est[:, 0].numpy().clip(lo, hi))
        return GeneratedSet(
            inception_features(rgb, **self.kw), self._depth_features(estimated), scores, nonfinite
        )

    def summary(
        self, gen: GeneratedSet, reference: GeneratedSet | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(row, diff): each metric with its CI; ``diff`` = this set − ``reference`` (paired by
        sample index, so both must hold the same seeds in the same order), with verdicts."""
        paired = reference is not None and reference.n == gen.n
        if reference is not None and not paired:
            raise DagError(
                f"paired comparison needs equal sample counts, got {gen.n} and {reference.n}"
            )
        boot = {"n_boot": self.n_boot, "seed": self.seed}
        row: dict[str, Any] = {"n": gen.n}
        diff: dict[str, Any] = {}
        for name, feats, real in (
            ("dfid", gen.depth_features, self.real_depth),
            ("fid", gen.image_features, self.real_images),
        ):
            ref = None if reference is None else getattr(reference, _FEATURES[name])
            point, delta = fid_bootstrap(feats, real, paired_with=ref, **boot)
            row.update(point.as_dict(name))
            if delta is not None:
                diff.update(delta.as_dict(f"{name}_diff"))
                base = point.value - delta.value
                diff[f"{name}_rel_change"] = delta.value / base if base else float("nan")
                diff[f"{name}_verdict"] = verdict(delta)
        for prefix, feats, real in (
            ("", gen.image_features, self.real_images),
            ("depth_", gen.depth_features, self.real_depth),
        ):
            row.update({prefix + k: v for k, v in kid_prc(feats, real, seed=self.seed).items()})
        if gen.consistency is not None:
            row["labels_nonfinite"] = gen.nonfinite_labels
            for key, values in gen.consistency.items():
                name = f"consistency_{key}"
                row.update(mean_bootstrap(values, **boot).as_dict(name))
                if reference is not None and reference.consistency is not None:
                    delta = mean_bootstrap(values, paired_with=reference.consistency[key], **boot)
                    diff.update(delta.as_dict(f"{name}_diff"))
                    diff[f"{name}_verdict"] = verdict(delta)
        return row, (diff if reference is not None else None)

    def gap(self, gen: GeneratedSet, floor: GeneratedSet) -> dict[str, float]:
        """dFID and FID of ``gen`` above the floor that ``floor`` (held-out real images, as many
        as ``gen``) reaches: ``<name>_gap`` and ``<name>_gap_rel`` (= the relative
        reduction possible), each with its CI (:func:`~dag_core.metrics.effect.fid_gap`)."""
        out: dict[str, float] = {}
        for name, attr in _FEATURES.items():
            real = self.real_depth if name == "dfid" else self.real_images
            gap, rel = fid_gap(
                getattr(gen, attr), getattr(floor, attr), real, n_boot=self.n_boot, seed=self.seed
            )
            out.update(gap.as_dict(f"{name}_gap"))
            out.update(rel.as_dict(f"{name}_gap_rel"))
        return out


_FEATURES = {"dfid": "depth_features", "fid": "image_features"}
