"""Cheap checks of input files from their headers and metadata alone (no torch, no pixels).

Each rule is checked by ONE function here, shared by the stage schemas (:mod:`flows.schema`,
before Prefect and torch load) and by the library code that reads the same file later, so a bad
file gives the same reason whenever it is caught:

* :func:`check_unet_config`: a diffusers model config is a pixel-space ``UNet2DModel`` with a
  ``sample_size`` (its ``_class_name``; a VAE folder is an ``AutoencoderKL``);
* :func:`check_safetensors`: a ``.safetensors`` file is whole — its first 8 bytes are the
  little-endian u64 length of a JSON header giving each tensor's ``data_offsets``, and the file
  holds at least ``8 + header length + the largest end offset`` bytes;
* :func:`check_depth_png`: a depth PNG is 16-bit (millimetres), read from its header (PIL opens
  lazily; no pixel is decoded);
* :func:`folder_pairs`: a ``folder`` label source pairs every image with a depth map;
* :func:`read_json_object`: a JSON file parses to an object.

Each raises :class:`FileProblem` (a :class:`~dag_core.errors.DagError`) whose message is
``<path> <reason>``; :meth:`FileProblem.param_error` names the params key the path came from.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from dag_core.errors import DagError, ParamError

#: the diffusers class of every base model the pipeline samples from
UNET_CLASS = "UNet2DModel"
#: PIL modes of a 16-bit greyscale PNG ("I" where an older Pillow widens it to int32)
DEPTH_PNG_MODES = ("I;16", "I;16B", "I;16L", "I")
#: the image files of a ``folder`` label source
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: PIL modes whose samples are 8 bits wide
EIGHT_BIT_MODES = ("L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")


class FileProblem(DagError):
    """A file that fails a check: ``<path> <reason>``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path} {reason}")

    def param_error(self, key: str, value: Any) -> ParamError:
        """The same problem as one params error under ``key`` (``value``: what the user wrote;
        the file is named again unless it is that value)."""
        same = isinstance(value, str) and Path(value) == Path(self.path)
        return ParamError(key, value, self.reason if same else str(self))


def check_unet_config(config: dict[str, Any], where: str | Path) -> None:
    """FileProblem unless ``config`` (a diffusers ``config.json`` in ``where``) describes a
    pixel-space ``UNet2DModel`` with a ``sample_size``."""
    name = config.get("_class_name", UNET_CLASS)
    if name != UNET_CLASS:
        raise FileProblem(where, f"holds a {name}; only pixel-space {UNET_CLASS} is supported")
    if "sample_size" not in config:
        raise FileProblem(where, "holds a U-Net config without sample_size")


def check_safetensors(path: str | Path) -> None:
    """FileProblem unless the safetensors file at ``path`` is whole by its own header: the JSON
    header is there and parses, and the file is long enough for every tensor's data."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise FileProblem(path, f"is cut short: {size} bytes, not even a header length")
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                raise FileProblem(
                    path, f"is cut short: {size} bytes, its header alone needs {8 + length}"
                )
            raw = fh.read(length)
    except OSError as exc:
        raise FileProblem(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        header = json.loads(raw)
        ends = [
            int(entry["data_offsets"][1])
            for name, entry in header.items()
            if name != "__metadata__"
        ]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise FileProblem(path, "has a damaged header (not safetensors JSON)") from None
    need = 8 + length + max(ends, default=0)
    if size < need:
        raise FileProblem(path, f"is cut short: {size} bytes, its header needs {need}")


def check_depth_png(path: str | Path) -> None:
    """FileProblem unless the PNG at ``path`` is 16-bit greyscale (depth in millimetres); only
    its header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise FileProblem(path, f"is not a readable image ({type(exc).__name__})") from None
    if mode in DEPTH_PNG_MODES:
        return
    bits = "8-bit" if mode in EIGHT_BIT_MODES else "not 16-bit"
    raise FileProblem(
        path,
        f"is {bits} (mode {mode}), not 16-bit millimetres; store depth in mm (uint16 PNG) or "
        "as .npy metres",
    )


def folder_pairs(path: str | Path, depth_dir: str | Path) -> list[tuple[Path, Path]]:
    """The (image, depth map) pairs of a ``folder`` label source: each image (``*.png``,
    ``*.jpg``, ``*.jpeg``) in ``path`` with the depth map of the same stem in ``depth_dir``
    (``.png``, else ``.npy``), sorted by image name; DagError naming what is missing."""
    images, depths = Path(path), Path(depth_dir)
    for folder in (images, depths):
        if not folder.is_dir():
            raise DagError(f"folder not found: {folder}")
    pairs = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        found = [m for m in (depths / f"{img.stem}{s}" for s in (".png", ".npy")) if m.is_file()]
        if not found:
            raise DagError(f"no depth map for {img} in {depths} ({img.stem}.png or .npy)")
        pairs.append((img, found[0]))
    if not pairs:
        raise DagError(f"no images (*.png, *.jpg) in {images}")
    return pairs


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in the file at ``path``; FileProblem if it does not parse or is not an
    object (OSError if it cannot be read)."""
    try:
        data = json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise FileProblem(path, "is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FileProblem(path, f"is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FileProblem(path, f"must hold a JSON object, got {type(data).__name__}")
    return data
