"""Downstream monocular depth estimation: train one depth network per training set, test on NYU.

The DAG paper (Kim et al., arXiv 2212.08861, Sec. 4, "Downstream task") measures the value of
depth-aware guided samples by training a monocular depth estimator on each synthetic dataset and
testing it on NYU-Depth v2. This module gives every training set the SAME network
(:class:`DepthNet`, a small conv–GroupNorm–SiLU U-Net), the SAME budget (exactly
``config.steps`` steps of ``config.batch_size`` samples, :class:`DownstreamConfig`) and the same
evaluation (:func:`evaluate`, the standard NYU metrics of :mod:`dag_core.metrics.depth`), so only
the data differs: the labelled subset, unguided samples, and DAG (DCG + DPG) samples.

Reading generated datasets into depth training — a dataset written by
:func:`dag_core.shards.write_dataset` (or by resumable synthesis) is a directory of Parquet shards,
streamed by :class:`dag_core.shards.ShardDataset` through a torch ``DataLoader``::

    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DownstreamConfig, evaluate, save_depth_net, train_depth_net
    from dag_core.nyu import open_nyu

    norm, config = DepthNorm(), DownstreamConfig()
    model, log_rows = train_depth_net(["data/synthetic/dag"], config, norm)
    save_depth_net(model, config, norm, "models/depth_net_dag")
    print(evaluate(model, open_nyu("data/nyu2_test"), norm, config.resolution, eigen_crop=True))

Several directories are concatenated (``torch.utils.data.ChainDataset``) into one training set.
Each sample is resized so its short side is ``config.resolution`` and centre-cropped to a
``resolution × resolution`` square (depth resized with a validity mask, so holes stay holes); the
stream is shuffled with a seeded buffer, re-shuffled every pass, flipped horizontally at random and
cycled until ``config.steps`` full batches have been drawn. Training is deterministic in
``config.seed`` (single-process loading, private seeded generators for the init, loader and
flips: the global RNG is never used, so nets trained in parallel threads do not disturb each other).

Losses (``config.loss``), both on valid pixels only (:meth:`DepthNorm.valid`):

* ``l1_log`` — L1 between predicted and true depth in the normalised space of
  :class:`DepthNorm` (log-depth for the default ``log`` normalisation);
* ``silog``  — the scale-invariant log loss of Eigen et al. (2014) on depth in metres,
  ``sqrt(mean(g²) − λ·mean(g)²)`` with ``g = log d̂ − log d`` and λ = 0.85.

The network itself (:class:`DepthNet`, its safetensors + JSON files, :func:`predict_depth`) is
:mod:`dag_core.depthnet`, which the dFID's scorer shares; it is re-exported here. One
responsibility per module: :mod:`~dag_core.downstream.data` (square crops, shuffled stream),
:mod:`~dag_core.downstream.training` (:func:`train_depth_net`: regimes ``alone``, ``finetune``,
``mix``, validation checkpoints), :mod:`~dag_core.downstream.relabel` (the diagnostic's
re-labelled sets),
:mod:`~dag_core.downstream.evaluation` (metrics, run means, paired comparisons) and
:mod:`~dag_core.downstream.report` (metrics record, Markdown tables). Import from here.
"""

from dag_core.configs.downstream import LOSSES, REGIMES, DownstreamConfig, TrainingSet
from dag_core.depthnet import (
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    ConvBlock,
    DepthNet,
    inference_size,
    load_depth_net,
    predict_depth,
    save_depth_net,
)
from dag_core.downstream.data import (
    SHUFFLE_BUFFER,
    count_pairs,
    note_unscored,
    pair_stream,
    resize_pair,
    square_pairs,
)
from dag_core.downstream.evaluation import (
    PAIRED_METRICS,
    compare_sets,
    evaluate,
    evaluate_per_image,
    evaluate_training_sets,
    mean_over_runs,
    mean_with_ci,
    paired_comparison,
)
from dag_core.downstream.relabel import estimator_labeller, heads_labeller, relabel_dataset
from dag_core.downstream.report import (
    METRIC_LABELS,
    comparison_table,
    curve_rows,
    diagnostic_table,
    downstream_report,
    markdown_table,
)
from dag_core.downstream.training import SILOG_LAMBDA, chosen_step, depth_loss, train_depth_net

__all__ = [
    "FORMAT_VERSION",
    "LOSSES",
    "META_FILE",
    "METRIC_LABELS",
    "PAIRED_METRICS",
    "REGIMES",
    "SHUFFLE_BUFFER",
    "SILOG_LAMBDA",
    "WEIGHTS_FILE",
    "ConvBlock",
    "DepthNet",
    "DownstreamConfig",
    "TrainingSet",
    "chosen_step",
    "compare_sets",
    "comparison_table",
    "count_pairs",
    "curve_rows",
    "depth_loss",
    "diagnostic_table",
    "downstream_report",
    "estimator_labeller",
    "evaluate",
    "evaluate_per_image",
    "evaluate_training_sets",
    "heads_labeller",
    "inference_size",
    "load_depth_net",
    "markdown_table",
    "mean_over_runs",
    "mean_with_ci",
    "note_unscored",
    "pair_stream",
    "paired_comparison",
    "predict_depth",
    "relabel_dataset",
    "resize_pair",
    "save_depth_net",
    "square_pairs",
    "train_depth_net",
]
