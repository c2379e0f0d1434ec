"""The dataset card: ``README.md`` in every dataset folder, as the Hugging Face Hub reads it.

YAML front matter that ``datasets`` and the Hub read — ``configs`` (the manifest's shards as the
``train`` split's ``data_files``, so ``load_dataset(directory)`` reads exactly them),
``dataset_info`` (the shards' features, as ``datasets`` writes them in YAML; rows; bytes),
``task_categories: [depth-estimation]``, ``size_categories``, ``license`` (from params) and
``pretty_name`` — then a body generated from the dataset's own records: how it was made (the
rows' ``meta``: model hashes, guidance settings, sampler; the seed range and sources; the
writer's :class:`CardInfo`), its quality numbers with their confidence intervals (the mean label
uncertainty over the rows, and what the writing stage measured), the columns with depth's unit
and scale, how to read it (``load_dataset``, pandas, :class:`~dag_core.shards.ShardDataset`) and
its known limits.

The card is part of the dataset's checksummed output: :func:`~dag_core.shards.writer.
write_manifest` writes it (atomically) before the manifest, which records its sha256; ``verify``
fails when it is missing or changed. The same records always render the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from dag_core.shards.codec import DEPTH_SCALE

CARD_NAME = "README.md"
#: the Hub's size categories, by their upper bound of rows
_SIZES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M")]
#: z of a two-sided 95 % normal interval
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class CardInfo:
    """What a dataset card says beyond what the shards record.

    Args:
        title: The card's ``pretty_name`` and heading.
        summary: One paragraph: what the dataset is and what it is for.
        license: The ``license`` field (a Hub licence id, or ``other``).
        made: How it was made, beyond the rows' ``meta`` (key → value, rendered as a table).
        quality: The writing stage's quality numbers, one line each (with their CIs).
        limits: Its known limits, one line each.
    """

    title: str = "Image–depth pairs"
    summary: str = "Image–depth pairs written by dag_core.shards."
    license: str = "other"
    made: dict[str, Any] = field(default_factory=dict)
    quality: Sequence[str] = ()
    limits: Sequence[str] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form, kept in the manifest so a rebuilt manifest renders the same card."""
        return {
            "title": self.title,
            "summary": self.summary,
            "license": self.license,
            "made": self.made,
            "quality": list(self.quality),
            "limits": list(self.limits),
        }


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for ``rows`` rows."""
    return next((name for bound, name in _SIZES if rows < bound), "n>1M")


def yaml_features(features: dict[str, Any]) -> list[dict[str, Any]]:
    """``datasets`` features (``Features.to_dict()`` form) as the card's YAML list, as
    ``Features._to_yaml_list`` writes them."""

    def dtype(feature: dict[str, Any]) -> Any:
        kind = feature["_type"]
        if kind == "Value":
            return {"dtype": feature["dtype"]}
        if kind == "Image":
            return {"dtype": "image"}
        if kind == "Array2D":
            return {"dtype": {"array2_d": {"shape": feature["shape"], "dtype": feature["dtype"]}}}
        if kind == "List":
            inner = dtype(feature["feature"])
            return {"list": inner["dtype"] if set(inner) == {"dtype"} else inner}
        raise ValueError(f"no YAML form for feature {feature}")

    return [{"name": name, **dtype(f)} for name, f in features.items()]


def _flatten(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``meta`` as dotted keys (``guidance.w_dc``)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _records(paths: list[Path]) -> dict[str, Any]:
    """What the rows record, read without an image: seeds, sources, the ``meta`` every row
    shares (``index`` and other per-row keys left out) and the uncertainty scores."""
    seeds, sources, scores, shared = [], set(), [], None
    for path in paths:
        table = pq.read_table(path, columns=["seed", "source", "meta", "uncertainty"])
        seeds += [s for s in table.column("seed").to_pylist() if s is not None]
        sources |= set(pc.unique(table.column("source")).to_pylist())
        scores += [u for u in table.column("uncertainty").to_pylist() if u is not None]
        for text in pc.unique(table.column("meta")).to_pylist():
            flat = _flatten(json.loads(text))
            if shared is None:
                shared = flat
            shared = {k: v for k, v in shared.items() if k in flat and flat[k] == v}
    return {"seeds": seeds, "sources": sorted(sources), "scores": scores, "meta": shared or {}}


def mean_ci(values: list[float]) -> str:
    """``mean [lo, hi]``: the mean with its 95 % normal-approximation interval."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return f"{x.mean():.4g} (n={x.size}, no interval)" if x.size else "none"
    half = _Z95 * x.std(ddof=1) / math.sqrt(x.size)
    return f"{x.mean():.4g} [{x.mean() - half:.4g}, {x.mean() + half:.4g}] (95 % CI, n={x.size})"


def _cell(value: Any) -> str:
    """A table cell: JSON for everything but plain strings, pipes escaped."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def render_card(directory: Path, manifest: dict[str, Any], info: CardInfo) -> str:
    """The card of the dataset in ``directory`` whose complete shards ``manifest`` lists."""
    paths = [directory / s["file"] for s in manifest["shards"]]
    schema = pq.read_schema(paths[0])
    hf = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    rows, dtype = manifest["total_rows"], manifest["depth_dtype"]
    size = sum(p.stat().st_size for p in paths)
    footers = [pq.ParquetFile(p).metadata for p in paths]  # uncompressed bytes, as num_bytes
    raw = sum(m.row_group(i).total_byte_size for m in footers for i in range(m.num_row_groups))
    rec = _records(paths)
    synthetic = any(s.startswith("dag-synthesis") for s in rec["sources"])
    front = {
        "pretty_name": info.title,
        "license": info.license,
        "task_categories": ["depth-estimation"],
        "size_categories": [size_category(rows)],
        "tags": ["depth", "image", *(["synthetic"] if synthetic else [])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": [p.name for p in paths]}],
            }
        ],
        "dataset_info": {
            "features": yaml_features(hf),
            "splits": [{"name": "train", "num_bytes": raw, "num_examples": rows}],
            "download_size": size,
            "dataset_size": raw,
        },
    }
    made = {**info.made, **rec["meta"]}
    if rec["seeds"]:
        seeds = rec["seeds"]
        made["seeds"] = f"{min(seeds)} … {max(seeds)} ({len(seeds)} rows with a seed)"
    made["sources"] = ", ".join(rec["sources"])
    made["depth storage"] = dtype
    scale = DEPTH_SCALE[dtype]
    unit = "metres" if scale == 1.0 else f"millimetres (metres = value × {scale}; 0 = no depth)"
    quality = list(info.quality)
    if rec["scores"]:
        quality.append(f"label uncertainty (mean of the rows' scores): {mean_ci(rec['scores'])}")
    name = directory.name
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100).rstrip(),
        "---",
        "",
        f"# {info.title}",
        "",
        info.summary,
        "",
        f"{rows} rows in {len(paths)} Parquet shard(s) ({size} bytes), one `train` split.",
        "",
        "## How it was made",
        "",
        "| record | value |",
        "| --- | --- |",
        *(f"| {_cell(k)} | {_cell(v)} |" for k, v in made.items()),
        "",
        "## Quality",
        "",
        *(
            [f"- {q}" for q in quality]
            or ["- no quality numbers were recorded when it was written"]
        ),
        "",
        "## Columns",
        "",
        "- `rgb`: the image (`Image` feature, lossless PNG).",
        f"- `depth`: an `Array2D` of `{dtype}` values in {unit}; never 8-bit. The `depth` field's "
        "Parquet metadata holds the same (`unit`, `scale`, `invalid`).",
        "- `height`, `width`, `depth_dtype`: the pair's size and depth storage.",
        "- `seed`: the sampling seed (null for measured data); `source`: where the pair came from.",
        "- `meta`: a JSON object (guidance settings, sampler, model hashes… for synthetic rows).",
        "- `uncertainty`: how unsure the depth label is (higher = less sure; null when measured).",
        "",
        "## How to read it",
        "",
        "```python",
        "from datasets import load_dataset  # no other package needed",
        f'ds = load_dataset("{name}", split="train")  # this folder: the card names the shards',
        'image, depth = ds[0]["rgb"], np.asarray(ds[0]["depth"], np.float32)'
        + ("" if scale == 1.0 else f" * {scale}"),
        "",
        "import pandas as pd",
        f'frame = pd.read_parquet("{name}", ignore_prefixes=[".", "_", "README"])  # skip the card',
        "",
        "from dag_core.shards import ShardDataset, read_samples  # checked against the manifest",
        f'loader = torch.utils.data.DataLoader(ShardDataset("{name}"), batch_size=16)',
        "```",
        "",
        "## Integrity and limits",
        "",
        "- `_manifest.json` lists every shard and this card with their sha256; "
        f"`python -m dag_core.shards verify {name}` checks them (`load_dataset`, pandas don't).",
        *(f"- {limit}" for limit in info.limits),
        "",
    ]
    return "\n".join(lines)
