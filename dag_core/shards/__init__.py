"""One schema and IO layer for every image–depth dataset: Parquet shards via pyarrow.

Labelled subsets, world data and the synthetic outputs of depth-aware guided sampling (DAG,
Kim et al., arXiv 2212.08861) all share this layout. A dataset is a directory::

    part-00000.parquet      one row per sample, ~``row_group_size`` rows per row group
    part-00001.parquet
    ...
    _manifest.json          schema version, per-shard file/rows/sha256, total rows, depth dtype

Columns (:data:`SCHEMA`, version 3), each a Hugging Face ``datasets`` feature recorded in the
Parquet schema metadata as ``datasets`` writes it: ``id`` string; ``rgb`` the ``Image`` feature
(PNG bytes, lossless); ``depth`` an ``Array2D`` (H, W) of ``depth_dtype`` ∈ {``float16``,
``float32`` metres, ``uint16mm`` = uint16 millimetres}, its unit and scale in the field's metadata;
``height``, ``width`` int32; ``seed`` int64 (nullable); ``source`` string; ``meta`` a JSON object as
text (guidance scales, sampler, model hashes...); ``uncertainty`` float32 (nullable). Depth is
never 8-bit. ``uint16mm`` stores ``round(metres * 1000)`` clipped to 0..65535, with 0 meaning
invalid/missing (read back as 0.0 m). Every read returns depth as float32 metres; datasets of
schema versions 1 and 2 (PNG and raw depth bytes) still read (:mod:`~dag_core.shards.codec`).

``uncertainty`` is how unsure the row's depth label is, higher = less sure: synthesis stores the
mean of the top 10 % of the per-pixel uncertainty of the strong head's final depth
(ddpm-segmentation's per-image score; :mod:`dag_core.uncertainty`); measured depth (labelled
subsets, reference data) stores null. It is a column of :func:`read_pandas` (NaN where null),
:attr:`Sample.uncertainty` (None), a float32 tensor of every :class:`ShardDataset` item (NaN, so
labelled and synthetic rows collate together) and passed through by :mod:`dag_core.hf`. Every
reader takes ``drop_uncertain=f`` to leave out the most uncertain fraction f ∈ [0, 1) of the
scored rows — ``N − floor(f · n)`` of N rows kept, n = rows with a score, ties dropped later row
first (:mod:`~dag_core.shards.filtering`). Schema version 2 added the column; datasets of version
1 are still read (``uncertainty`` null), and a resumed synthesis re-renders older shards.

Writes are atomic: a shard is written to ``.part-XXXXX.parquet.tmp-<pid>`` in the same directory,
fsynced, then renamed with :func:`os.replace`; a crash leaves at most a dot-file that every reader
ignores. Existing shards are never replaced unless ``overwrite=True``. Resumable synthesis writes
shard ``k`` with :func:`write_shard`, asks :func:`completed_shards` what is done, and finishes with
:func:`write_manifest`.

The manifest is named ``_manifest.json`` (not ``manifest.json``) because pyarrow dataset discovery
skips names starting with ``.`` or ``_`` but tries to parse every other file as Parquet. The
dataset card must be ``README.md`` for the Hub and ``load_dataset(directory)``, so pandas and
pyarrow read a folder with ``ignore_prefixes=[".", "_", "README"]`` (the card says so). Interop
with other tools, through the same check that the dataset is whole (``load_dataset``, pandas or a
``part-*.parquet`` glob would read a dataset with a shard missing or damaged as whole)::

    read_pandas("data/synth")                               # pandas, checked first
    datasets.load_dataset("parquet", data_files=dag_core.hf.shard_files("data/synth"))

``datasets`` alone (no import of this package) decodes version 3 columns itself: ``rgb`` as PIL
images, ``depth`` as (H, W) arrays of stored values (metres = value × the ``depth`` field's
``scale``). ``load_dataset(directory)`` reads the shards the card's ``configs`` list
(:mod:`~dag_core.shards.card`, written with the manifest, which records its sha256).

One responsibility per module: :mod:`~dag_core.shards.codec` (schema, sample ↔ row),
:mod:`~dag_core.shards.integrity` (checksums, manifest, verification),
:mod:`~dag_core.shards.writer` (atomic shard, card and manifest writes),
:mod:`~dag_core.shards.card` (the dataset card), :mod:`~dag_core.shards.readers`
(samples, arrays, tables), :mod:`~dag_core.shards.filtering` (``drop_uncertain``),
:mod:`~dag_core.shards.torch_dataset` (:class:`ShardDataset`) and :mod:`~dag_core.shards.cli`
(``python -m dag_core.shards verify DIR...``). Import from here.
"""

from dag_core.shards.card import CARD_NAME, CardInfo
from dag_core.shards.cli import main
from dag_core.shards.codec import (
    DEPTH_DTYPES,
    MANIFEST_NAME,
    SAMPLE_FIELDS,
    SCHEMA,
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_VERSION,
    SCHEMAS,
    Sample,
    decode_depth,
    encode_depth,
    hf_features,
    schema_v3,
    shard_name,
)
from dag_core.shards.filtering import keep_mask
from dag_core.shards.integrity import (
    completed_shards,
    dataset_problems,
    find_datasets,
    verify_dataset,
)
from dag_core.shards.readers import read_arrays, read_pandas, read_samples, read_table
from dag_core.shards.torch_dataset import ShardDataset, load_tensors
from dag_core.shards.writer import update_card, write_dataset, write_manifest, write_shard

__all__ = [
    "CARD_NAME",
    "DEPTH_DTYPES",
    "MANIFEST_NAME",
    "SAMPLE_FIELDS",
    "SCHEMA",
    "SCHEMAS",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "SCHEMA_VERSION",
    "CardInfo",
    "Sample",
    "ShardDataset",
    "completed_shards",
    "dataset_problems",
    "decode_depth",
    "encode_depth",
    "find_datasets",
    "hf_features",
    "keep_mask",
    "load_tensors",
    "main",
    "read_arrays",
    "read_pandas",
    "read_samples",
    "read_table",
    "schema_v3",
    "shard_name",
    "update_card",
    "verify_dataset",
    "write_dataset",
    "write_manifest",
    "write_shard",
]
