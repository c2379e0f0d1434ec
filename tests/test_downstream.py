"""Downstream depth network: shapes, training on shard datasets, persistence, NYU evaluation."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from dag_core.depthnet import seeded_depth_net
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import (
    DepthNet,
    DownstreamConfig,
    evaluate,
    evaluate_per_image,
    inference_size,
    load_depth_net,
    markdown_table,
    paired_comparison,
    predict_depth,
    resize_pair,
    save_depth_net,
    train_depth_net,
)
from dag_core.errors import DagError
from dag_core.nyu import read_densedepth
from dag_core.runtime import shared_cpu
from dag_core.shards import Sample, write_dataset

NORM = DepthNorm(min_depth=0.25, max_depth=10.0)
CONFIG = DownstreamConfig(channels=(8, 16), steps=80, batch_size=8, lr=1e-2, seed=3)


def synthetic_samples(n: int, seed: int, h: int = 32, w: int = 32) -> list[Sample]:
    """Images whose depth is a pixel-wise function of colour: a vertical ramp plus brightness.

    Red is a vertical ramp with a per-sample slope and offset, green a smooth random brightness
    field, blue noise; depth = 0.5 + 4 · red + 3 · green (metres, colours in [0, 1]). A few
    pixels have no depth (0).
    """
    rng = np.random.default_rng(seed)
    samples = []
    rows = np.linspace(0.0, 1.0, h)[:, None] * np.ones((1, w))
    for i in range(n):
        red = np.clip(rows * rng.uniform(0.4, 1.0) + rng.uniform(0.0, 0.4), 0, 1)
        coarse = rng.uniform(0, 1, (4, 4))
        green = np.kron(coarse, np.ones((h // 4 + 1, w // 4 + 1)))[:h, :w]
        blue = rng.uniform(0, 1, (h, w))
        rgb = np.rint(np.stack([red, green, blue], -1) * 255).astype(np.uint8)
        depth = (0.5 + 4.0 * rgb[..., 0] / 255.0 + 3.0 * rgb[..., 1] / 255.0).astype(np.float32)
        depth[rng.uniform(size=(h, w)) < 0.05] = 0.0
        samples.append(Sample(id=f"s{seed}-{i:03d}", rgb=rgb, depth=depth, seed=i))
    return samples


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth")
    write_dataset(path, synthetic_samples(16, seed=0), shard_size=6)
    return path


@pytest.fixture(scope="module")
def trained(dataset_dir) -> tuple[DepthNet, list[dict]]:
    return train_depth_net([dataset_dir], CONFIG, NORM, log=lambda _msg: None)


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (17, 23), (3, 5), (48, 64)])
def test_depthnet_shapes(size) -> None:
    net = DepthNet((4, 8, 8))
    assert net.stride == 4
    out = net(torch.zeros(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()
    with pytest.raises(DagError, match="expects images"):
        net(torch.zeros(2, 1, *size))


def test_config_validation() -> None:
    with pytest.raises(DagError, match="stride"):
        DownstreamConfig(resolution=30, channels=(8, 16, 32))
    with pytest.raises(DagError, match="loss"):
        DownstreamConfig(loss="l2")
    with pytest.raises(DagError, match="steps"):
        DownstreamConfig(steps=0)
    with pytest.raises(DagError, match=r"steps=2: must be >= 3"):
        DownstreamConfig(steps=2)
    assert DownstreamConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_training_lowers_loss_and_beats_constant(trained, dataset_dir) -> None:
    model, rows = trained
    assert [r["step"] for r in rows] == list(range(1, CONFIG.steps + 1))
    losses = [r["loss"] for r in rows]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert not model.training

    train = synthetic_samples(16, seed=0)
    held_out = synthetic_samples(6, seed=1)
    mean_depth = float(np.mean([s.depth[s.depth > 0].mean() for s in train]))
    abs_rel_const = np.mean(
        [
            np.mean(np.abs(mean_depth - s.depth[s.depth > 0]) / s.depth[s.depth > 0])
            for s in held_out
        ]
    )
    result = evaluate(model, held_out, NORM, CONFIG.resolution)
    assert result["count"] == 6
    assert result["abs_rel"] < 0.75 * abs_rel_const
    # tuples work as well as objects with .rgb/.depth
    as_tuples = evaluate(model, [(s.rgb, s.depth) for s in held_out], NORM, CONFIG.resolution)
    assert as_tuples["abs_rel"] == pytest.approx(result["abs_rel"])


def test_training_is_deterministic_in_seed(trained, dataset_dir) -> None:
    model, rows = trained
    again, rows_again = train_depth_net([dataset_dir], CONFIG, NORM, log=lambda _msg: None)
    assert [r["loss"] for r in rows_again] == [r["loss"] for r in rows]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = DownstreamConfig(**{**CONFIG.to_dict(), "seed": 4, "steps": 20})
    _, rows_other = train_depth_net([dataset_dir], other, NORM, log=lambda _msg: None)
    assert [r["loss"] for r in rows_other] != [r["loss"] for r in rows[:3]]


def test_seeded_depth_net_is_torchs_default_init_without_the_global_rng() -> None:
    torch.manual_seed(11)
    expected = DepthNet((8, 16, 32))
    before = torch.get_rng_state()
    got = seeded_depth_net((8, 16, 32), 11)
    assert torch.equal(torch.get_rng_state(), before)
    for name, value in expected.state_dict().items():
        assert torch.equal(got.state_dict()[name], value), name
    assert not torch.equal(got.out.weight, seeded_depth_net((8, 16, 32), 12).out.weight)


def test_nets_trained_in_parallel_threads_equal_nets_trained_one_at_a_time(dataset_dir) -> None:
    """The downstream stage trains ``workers`` nets in threads at once: each must come out as it
    would alone, even with another thread re-seeding and drawing from torch's global RNG all the
    while (the model init and the loader used to draw from it, so parallel nets raced)."""
    configs = [DownstreamConfig(**{**CONFIG.to_dict(), "steps": 30, "seed": s}) for s in (5, 6)]

    def train(config: DownstreamConfig) -> tuple[DepthNet, list[dict]]:
        return train_depth_net([dataset_dir], config, NORM, log=lambda _m: None)

    with shared_cpu(2):
        alone = [train(c) for c in configs]
        stop = threading.Event()

        def neighbour() -> None:
            while not stop.is_set():
                torch.manual_seed(0)
                torch.rand(64)

        noise = threading.Thread(target=neighbour, daemon=True)
        noise.start()
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                together = list(pool.map(train, configs))
        finally:
            stop.set()
            noise.join()
    for (model, rows), (model_t, rows_t) in zip(alone, together, strict=True):
        assert rows_t == rows
        for name, value in model.state_dict().items():
            assert torch.equal(model_t.state_dict()[name], value), name


@pytest.mark.parametrize("steps", [3, 10, 19])
def test_short_budgets_train(dataset_dir, steps: int) -> None:
    """10 steps used to end in a ZeroDivisionError inside torch's OneCycleLR (a one-step
    warm-up); the warm-up now takes at least two steps, and 20+ steps keep 10 %."""
    config = DownstreamConfig(channels=(8, 16), steps=steps, batch_size=4)
    _model, rows = train_depth_net([dataset_dir], config, NORM, log=lambda _m: None)
    assert len(rows) == steps and all(math.isfinite(r["loss"]) for r in rows)
    assert DownstreamConfig(steps=800).warmup_fraction == 0.1


def test_training_reads_several_non_square_datasets(tmp_path, dataset_dir) -> None:
    wide = tmp_path / "wide"
    write_dataset(wide, synthetic_samples(4, seed=2, h=24, w=40))
    config = DownstreamConfig(channels=(8, 16), steps=20, batch_size=20, loss="silog", seed=1)
    messages: list[str] = []
    _model, rows = train_depth_net([dataset_dir, wide], config, NORM, log=messages.append)
    assert len(rows) == 20 and all(math.isfinite(r["loss"]) for r in rows)
    assert "20 training samples from 2 dir(s)" in messages[0]


def test_resize_pair_keeps_holes_out_of_the_labels() -> None:
    depth = torch.full((1, 1, 8, 8), 2.0)
    depth[..., :4, :4] = 0.0
    depth[..., 6, 6] = float("nan")
    image, small = resize_pair(torch.zeros(1, 3, 8, 8), depth, (4, 4))
    assert image.shape == (1, 3, 4, 4) and small.shape == (1, 1, 4, 4)
    assert torch.all(small[..., :2, :2] == 0)
    valid = small > 0
    assert valid.sum() == 12
    torch.testing.assert_close(small[valid], torch.full((12,), 2.0))


def test_missing_or_empty_dataset_raises(tmp_path) -> None:
    with pytest.raises(DagError, match="does not exist"):
        train_depth_net([tmp_path / "nope"], CONFIG, NORM, log=lambda _msg: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DagError, match="no part-"):
        train_depth_net([tmp_path / "empty"], CONFIG, NORM, log=lambda _msg: None)
    with pytest.raises(DagError, match="non-empty"):
        train_depth_net([], CONFIG, NORM, log=lambda _msg: None)


def test_save_load_round_trip(trained, tmp_path) -> None:
    model, _ = trained
    save_depth_net(model, CONFIG, NORM, tmp_path / "net")
    assert (tmp_path / "net" / "depth_net.safetensors").is_file()
    loaded, config, norm = load_depth_net(tmp_path / "net")
    assert config == CONFIG and norm == NORM and not loaded.training
    rgb = synthetic_samples(2, seed=5)[0].rgb
    np.testing.assert_array_equal(
        predict_depth(loaded, rgb, norm, config.resolution),
        predict_depth(model, rgb, NORM, CONFIG.resolution),
    )
    (tmp_path / "net" / "depth_net.safetensors").write_bytes(b"junk")
    with pytest.raises(DagError, match="corrupt depth-net weights"):
        load_depth_net(tmp_path / "net")
    with pytest.raises(DagError, match="missing depth-net file"):
        load_depth_net(tmp_path / "elsewhere")


def test_predict_depth_returns_input_size(trained) -> None:
    model, _ = trained
    assert inference_size(480, 640, 32, 2) == (32, 42)
    assert inference_size(480, 640, 32, 4) == (32, 44)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = predict_depth(model, rgb, NORM, 32)
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert np.all((depth >= NORM.min_depth - 1e-4) & (depth <= NORM.max_depth + 1e-3))
    batch = predict_depth(model, np.stack([rgb, rgb[::-1]]), NORM, 32)
    assert batch.shape == (2, 480, 640)
    np.testing.assert_allclose(batch[0], depth, rtol=1e-4)
    assert predict_depth(model, rgb[:7, :9], NORM, 32).shape == (7, 9)
    with pytest.raises(DagError, match="uint8"):
        predict_depth(model, rgb.astype(np.float32), NORM, 32)


def test_evaluate_on_real_nyu_pairs(trained, nyu_test50_dir: Path) -> None:
    model, _ = trained
    pairs = read_densedepth(nyu_test50_dir)[:3]
    assert pairs[0].depth.shape == (480, 640)
    result = evaluate(model, pairs, NORM, CONFIG.resolution, eigen_crop=True)
    assert result["count"] == 3
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3"):
        assert math.isfinite(result[key]), key
    assert 0.0 <= result["delta1"] <= result["delta2"] <= result["delta3"] <= 1.0
    scaled = evaluate(model, pairs, NORM, CONFIG.resolution, eigen_crop=True, median_scaling=True)
    assert scaled["abs_rel"] != result["abs_rel"]
    with pytest.raises(DagError, match="480x640"):
        evaluate(model, synthetic_samples(1, seed=0), NORM, CONFIG.resolution, eigen_crop=True)


def test_per_image_metrics_are_the_means_parts(trained, nyu_test50_dir: Path) -> None:
    model, _ = trained
    pairs = read_densedepth(nyu_test50_dir)[:4]
    acc = evaluate_per_image(model, pairs, NORM, CONFIG.resolution, eigen_crop=True)
    rows = acc.per_image()
    assert all(len(v) == 4 for v in rows.values())
    means = evaluate(model, pairs, NORM, CONFIG.resolution, eigen_crop=True)
    assert means["abs_rel"] == pytest.approx(rows["abs_rel"].mean())
    assert means["delta1"] == pytest.approx(rows["delta1"].mean())


def test_paired_comparison_verdicts() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 60)
    per_image = {
        "unguided": {"abs_rel": base, "delta1": 1 - base},
        "same": {"abs_rel": base + rng.normal(0, 1e-3, 60), "delta1": 1 - base},
        "better": {"abs_rel": base - 0.05 + rng.normal(0, 0.01, 60), "delta1": 1.04 - base},
    }
    out = paired_comparison(per_image, "unguided", n_boot=500)
    assert set(out) == {"same", "better"}
    assert out["same"]["abs_rel_verdict"] == "no difference"
    assert out["same"]["delta1_verdict"] == "no difference"
    better = out["better"]
    assert better["abs_rel_verdict"] == "lower" and better["delta1_verdict"] == "higher"
    assert better["abs_rel_diff_ci_lo"] < better["abs_rel_diff"] < better["abs_rel_diff_ci_hi"] < 0
    assert better["abs_rel_diff"] == pytest.approx(-0.05, abs=0.005)
    with pytest.raises(DagError, match="'labelled'"):
        paired_comparison(per_image, "labelled")


def test_paired_comparison_over_training_runs() -> None:
    """(runs, images) arrays: a set that is better only in one of three runs is no difference,
    though pooling the runs' images as if they were one run would call it lower."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.4, (3, 80))
    lucky = base.copy()
    lucky[0] -= 0.06
    per_image = {
        "unguided": {"abs_rel": base, "delta1": 1 - base},
        "lucky": {"abs_rel": lucky + rng.normal(0, 1e-3, (3, 80)), "delta1": 1 - lucky},
    }
    row = paired_comparison(per_image, "unguided", n_boot=1000)["lucky"]
    assert row["abs_rel_diff"] == pytest.approx(-0.02, abs=1e-3)
    assert row["abs_rel_verdict"] == "no difference"
    flat = {k: {m: v.ravel() for m, v in d.items()} for k, d in per_image.items()}
    assert paired_comparison(flat, "unguided", n_boot=1000)["lucky"]["abs_rel_verdict"] == "lower"


def test_markdown_table() -> None:
    results = {
        "labelled": {"abs_rel": 0.31234, "rmse": 1.2, "delta1": 0.5, "count": 654},
        "dag": {"abs_rel": 0.25, "rmse": 1.0, "delta1": 0.61, "count": 654},
    }
    table = markdown_table(results)
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == "| training set | AbsRel ↓ | RMSE ↓ | δ<1.25 ↑ |"
    assert lines[2] == "| labelled | 0.312 | 1.200 | 0.500 |"
    assert lines[3].startswith("| dag | 0.250 |")
    with pytest.raises(DagError, match="lack metric 'rmse_log'"):
        markdown_table(results, metrics=("rmse_log",))
    with pytest.raises(DagError, match="unknown metric"):
        markdown_table(results, metrics=("accuracy",))


# --- regimes, validation checkpoints, subsets, re-labelling, comparisons ------------------------


def _scaled(samples: list[Sample], factor: float) -> list[Sample]:
    """The same images with depth × ``factor`` (another labelling of the same scenes)."""
    return [
        Sample(id=f"{s.id}-x{factor}", rgb=s.rgb, depth=s.depth * factor, seed=s.seed)
        for s in samples
    ]


@pytest.fixture(scope="module")
def two_labellings(tmp_path_factory) -> tuple[Path, Path, list[Sample]]:
    """(pairs with depth d, the same kind of pairs with depth 2 d, held-out images)."""
    root = tmp_path_factory.mktemp("regimes")
    write_dataset(root / "near", synthetic_samples(24, seed=5), shard_size=8)
    write_dataset(root / "far", _scaled(synthetic_samples(24, seed=6), 2.0), shard_size=8)
    return root / "near", root / "far", synthetic_samples(6, seed=7)


def _mean_depth(model: DepthNet, samples: list[Sample]) -> float:
    rgb = np.stack([s.rgb for s in samples])
    return float(predict_depth(model, rgb, NORM, 32).mean())


def test_finetune_and_mix_regimes_learn_from_the_labelled_pairs(two_labellings) -> None:
    """finetune ends on the labelled pairs (its predictions follow their scale), mix sees both
    every batch (in between), alone never sees them."""
    near, far, held = two_labellings
    config = DownstreamConfig(
        channels=(8, 16), steps=120, batch_size=8, lr=1e-2, finetune_fraction=0.5
    )
    log: list[str] = []
    means = {}
    for regime in ("alone", "finetune", "mix"):
        model, rows = train_depth_net(
            [near], config, NORM, regime=regime, labelled=[far], log=log.append
        )
        assert len(rows) == config.steps
        means[regime] = _mean_depth(model, held)
    assert means["alone"] < means["mix"] < means["finetune"]
    assert means["finetune"] > 1.4 * means["alone"]
    assert any("60 steps on 24 samples, then 60 on 24 labelled pairs" in m for m in log)
    assert any("4 of 24 labelled + 4 of 24 pairs a batch" in m for m in log)
    with pytest.raises(DagError, match="labelled"):
        train_depth_net([near], config, NORM, regime="mix", log=lambda _m: None)


def test_finetune_from_the_alone_runs_state_is_the_same_run(two_labellings, tmp_path) -> None:
    """A finetune run started from the alone run's state at the branch step ends with the same
    weights and rows as one trained from step 0; a state from another run is refused."""
    near, far, _ = two_labellings
    config = DownstreamConfig(channels=(8, 16), steps=40, batch_size=8, lr=1e-2, validate_every=6)
    quiet = {"log": lambda _m: None, "validation": far}
    state = tmp_path / "branch.pt"
    _, alone_rows = train_depth_net([near], config, NORM, branch_to=state, **quiet)
    scratch, scratch_rows = train_depth_net(
        [near], config, NORM, regime="finetune", labelled=[far], **quiet
    )
    log: list[str] = []
    kw = {**quiet, "log": log.append}
    forked, forked_rows = train_depth_net(
        [near], config, NORM, regime="finetune", labelled=[far], branch_from=state, **kw
    )
    assert forked_rows == scratch_rows and forked_rows[:30] == alone_rows[:30]
    assert forked_rows != alone_rows  # the last 10 steps learnt from the labelled pairs
    for name, value in scratch.state_dict().items():
        assert torch.equal(forked.state_dict()[name], value), name
    assert any("steps 1-30 from the alone run's state" in m for m in log)
    with pytest.raises(DagError, match="from another run"):
        train_depth_net(
            [far], config, NORM, regime="finetune", labelled=[far], branch_from=state, **quiet
        )
    with pytest.raises(DagError, match="needs the finetune regime"):
        train_depth_net([near], config, NORM, branch_from=state, **quiet)
    state.write_bytes(b"not a torch file")
    with pytest.raises(DagError, match="cannot read the branch state"):
        train_depth_net(
            [near], config, NORM, regime="finetune", labelled=[far], branch_from=state, **quiet
        )


def test_validation_keeps_the_best_scoring_weights(two_labellings) -> None:
    from dag_core.downstream import chosen_step, square_pairs
    from dag_core.metrics.depth import DepthMetricAccumulator

    near, far, _ = two_labellings
    # validated on the OTHER labelling: the score gets worse as training fits `near`, so the
    # kept weights are an early step's, not the last
    config = DownstreamConfig(channels=(8, 16), steps=60, batch_size=8, lr=1e-2, validate_every=7)
    model, rows = train_depth_net([near], config, NORM, validation=far, log=lambda _m: None)
    scored = [r["step"] for r in rows if "val_abs_rel" in r]
    assert scored == [7, 14, 21, 28, 35, 42, 49, 56, 60]
    kept = chosen_step(rows)
    assert kept["val_abs_rel"] == min(r["val_abs_rel"] for r in rows if "val_abs_rel" in r)
    images, depth = square_pairs(far, 32)
    acc = DepthMetricAccumulator(max_depth=NORM.max_depth)
    with torch.no_grad():
        acc.update(NORM.denormalize(model(images)), depth)
    assert acc.compute()["abs_rel"] == pytest.approx(kept["val_abs_rel"], rel=1e-5)
    assert chosen_step([{"step": 1, "loss": 1.0}]) == {"step": 1}


def test_limit_takes_the_first_rows(two_labellings) -> None:
    from dag_core.downstream import count_pairs

    near, _, _ = two_labellings
    assert count_pairs([near]) == 24 and count_pairs([near], 10) == 10
    config = DownstreamConfig(channels=(8, 16), steps=20, batch_size=4)
    log: list[str] = []
    train_depth_net([near], config, NORM, limit=10, log=log.append)
    assert "10 training samples" in log[0]
    with pytest.raises(DagError, match="limit 25 exceeds the 24 rows"):
        train_depth_net([near], config, NORM, limit=25, log=lambda _m: None)


def test_relabel_dataset_replaces_depth_and_keeps_the_images(two_labellings, tmp_path) -> None:
    from dag_core.downstream import relabel_dataset
    from dag_core.shards import read_samples

    near, _, _ = two_labellings
    out = relabel_dataset(
        near,
        tmp_path / "r",
        lambda rgb: np.full(rgb.shape[:3], 3.0, np.float32),
        "stub",
        limit=10,
        batch_size=4,
    )
    source = list(read_samples(near))[:10]
    got = list(read_samples(out))
    assert [s.id for s in got] == [s.id for s in source]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(got, source, strict=True))
    assert all(np.allclose(s.depth, 3.0) and s.meta["labels"] == "stub" for s in got)
    with pytest.raises(DagError, match="limit 30 exceeds the 24 rows"):
        relabel_dataset(near, tmp_path / "r2", lambda rgb: rgb[..., 0] * 0.0 + 1, "x", limit=30)


def test_compare_sets_and_curve_rows() -> None:
    from dag_core.downstream import compare_sets, curve_rows

    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, 200)
    per_image = {
        "a": {"abs_rel": base, "delta1": 1 - base},
        "b": {"abs_rel": base - 0.02 + rng.normal(0, 0.002, 200), "delta1": 1 - base},
        "c": {"abs_rel": base + rng.normal(0, 0.05, 200), "delta1": 1 - base},
    }
    rows = compare_sets(per_image, [("b", "a"), ("c", "a")], n_boot=200)
    assert [(r["set"], r["reference"]) for r in rows] == [("b", "a"), ("c", "a")]
    assert rows[0]["abs_rel_verdict"] == "lower" and rows[0]["abs_rel_diff_ci_hi"] < 0
    assert rows[1]["abs_rel_verdict"] == "no difference"
    with pytest.raises(DagError, match="unknown training set"):
        compare_sets(per_image, [("d", "a")])
    curve = curve_rows({500: "b", 100: "c", 2000: "a"}, per_image, n_boot=100)
    assert [r["n"] for r in curve] == [100, 500, 2000]
    assert curve[1]["abs_rel_ci_lo"] < curve[1]["abs_rel"] < curve[1]["abs_rel_ci_hi"]


def test_resume_records_keep_only_finished_units_of_the_same_key(tmp_path) -> None:
    """A unit counts as done only with its record, the same key and every file unchanged; a
    second holder of the same resume folder is refused while the first lives."""
    from dag_core.resumable import (
        forget,
        held_resume_dir,
        input_digest,
        is_done,
        mark_done,
        resume_dir,
        unit_key,
    )

    models = tmp_path / "models/downstream"
    assert resume_dir(models) == tmp_path / "models/.downstream.resume"
    with held_resume_dir(models) as work:
        with pytest.raises(DagError, match="another run is writing"), held_resume_dir(models):
            pass
        net, state = work / "dag/seed-0", work / "_branch/dag/seed-0.pt"
        net.mkdir(parents=True)
        state.parent.mkdir(parents=True)
        (net / "w.safetensors").write_bytes(b"weights")
        state.write_bytes(b"state")
        key = unit_key({"config": {"seed": 0}, "data": input_digest(net / "w.safetensors")})
        assert not is_done(net, key)  # no record yet
        mark_done(net, key, [state])
        assert is_done(net, key)
        assert not is_done(net, unit_key({"config": {"seed": 1}}))  # another unit's key
        state.write_bytes(b"other state")  # what a continuation needs is damaged
        assert not is_done(net, key)
        state.write_bytes(b"state")
        (net / "extra.json").write_text("{}")  # a file the record does not know
        assert not is_done(net, key)
        (net / "extra.json").unlink()
        assert is_done(net, key)
        forget(net)
        assert not is_done(net, key)
    with held_resume_dir(models):  # released when the holder's block ends
        pass


def test_drop_uncertain_on_a_schema_1_dataset_says_every_row_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dataset from before the uncertainty column keeps every row under drop_uncertain (as
    documented), and says so in one log line naming the key and the folder."""
    import logging

    from dag_core.downstream import count_pairs, note_unscored

    v1 = Path(__file__).parent / "data" / "shards-v1"
    key = "downstream.train_sets.old.drop_uncertain"
    want = f"{key}=0.25: {v1} has no uncertainty scores (schema 1); every row kept"
    said: list[str] = []
    assert note_unscored([v1], 0.25, key, said.append) == [want] and said == [want]
    assert count_pairs([v1], drop_uncertain=0.25) == count_pairs([v1]) == 5
    with caplog.at_level(logging.INFO, logger="dag_core.downstream.data"):
        note_unscored([v1], 0.25, key)  # the default: Python logging
    assert [r.getMessage() for r in caplog.records] == [want]
    # nothing to say without drop_uncertain, or for a dataset with the column
    scored = tmp_path / "scored"
    write_dataset(
        scored,
        [
            Sample(
                id="a",
                rgb=np.zeros((2, 2, 3), np.uint8),
                depth=np.ones((2, 2), np.float32),
                uncertainty=0.5,
            )
        ],
    )
    assert note_unscored([v1], 0.0, key, said.append) == []
    assert note_unscored([scored], 0.25, key, said.append) == [] and len(said) == 1
