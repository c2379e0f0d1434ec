"""Runtime: device resolution, precision, compile, deterministic resizes and guided-step levers
(all on CPU; the CUDA-only behaviour is checked through which kernels the graph calls)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch.utils._python_dispatch import TorchDispatchMode

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import decoder_layers
from dag_core.guidance import DepthGuidance, GuidanceConfig
from dag_core.guidance_runtime import RuntimeGuidance
from dag_core.heads import DepthHeads, HeadConfig
from dag_core.prior import DepthPrior, PriorConfig, prior_unet
from dag_core.resize import make_resize, matrix_resize
from dag_core.runtime import RuntimeConfig, compile_regions, use_runtime
from dag_core.sampling import make_scheduler, sample
from tests.numerics import assert_same_up_to_summation_order

REPO = Path(__file__).resolve().parents[1]

# --- config and device --------------------------------------------------------------------------


def test_defaults_are_todays_behaviour() -> None:
    cfg = RuntimeConfig.from_params(None)
    assert cfg == RuntimeConfig.from_params({})
    assert (cfg.device, cfg.precision, cfg.compile, cfg.deterministic) == (
        "auto",
        "fp32",
        False,
        False,
    )
    assert cfg.resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cfg.dtype == torch.float32


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"device": "gpu"}, "runtime.device"),
        ({"device": "cuda:x"}, "runtime.device"),
        ({"precision": "fp16"}, "runtime.precision"),
        ({"compile": "yes"}, "runtime.compile"),
        ({"deterministic": 1}, "runtime.deterministic"),
        ({"head_resolution": 0}, "runtime.head_resolution"),
        ({"guidance_chunk": True}, "runtime.guidance_chunk"),
        ({"devcie": "cpu"}, "unknown setting.*runtime.devcie"),
    ],
)
def test_bad_settings_name_the_value(params: dict, match: str) -> None:
    with pytest.raises(DagError, match=match):
        RuntimeConfig.from_params(params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_gpu_is_an_error(device: str) -> None:
    with pytest.raises(DagError, match="no CUDA GPU"):
        use_runtime({"device": device})


def test_deterministic_sets_backend_flags() -> None:
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        cfg, device = use_runtime({"device": "cpu", "deterministic": True})
        assert device == torch.device("cpu")
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert cfg.result_record() == {
            "precision": "fp32",
            "deterministic": True,
            "head_resolution": None,
            "compile": False,
            "channels_last": False,
            "device_type": "cpu",
        }
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_bf16_autocast_on_cpu() -> None:
    cfg = RuntimeConfig(precision="bf16")
    conv = torch.nn.Conv2d(3, 4, 1)
    with cfg.autocast("cpu"):
        assert conv(torch.randn(1, 3, 4, 4)).dtype == torch.bfloat16
    with RuntimeConfig().autocast("cpu"):
        assert conv(torch.randn(1, 3, 4, 4)).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_stage_cli_cuda_without_gpu_one_error_line(tmp_path: Path) -> None:
    """A stage asked for CUDA on a CPU machine: exactly one ``error:`` line, exit 2, nothing
    written (``reference`` reads no inputs, so the device is what its run stops at)."""
    out = tmp_path / "reference"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.reference",
            "--params",
            str(REPO / "params.yaml"),
            f"out_dir={out}/net",
            f"data_dir={out}/data",
            "runtime.device=cuda",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: runtime.device is 'cuda'"), lines
    assert not out.exists()


@pytest.mark.parametrize(("given", "want"), [(None, "AUTO"), ("AVX2", "AVX2")])
def test_mkl_reproducibility_is_set_before_torch_loads(given: str | None, want: str) -> None:
    """``import flows`` (every ``python -m flows.<stage>`` and Prefect worker run), ``import
    tasks`` and ``import dag_core`` set ``MKL_CBWR=AUTO`` before torch is loaded (MKL reads it only
    then: without it a resumed synthesis gave other bytes on an AVX-512 CPU); a value the caller
    set wins. ``import flows`` still loads neither torch nor Prefect (params are checked first)."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if given:
        env["MKL_CBWR"] = given
    for package, prefect in (("flows", False), ("tasks", True), ("dag_core", False)):
        loaded = "print(*(m in sys.modules for m in ('torch', 'prefect')))"
        code = f"import os, sys, {package}; {loaded}; print(os.environ['MKL_CBWR'])"
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split() == ["False", str(prefect), want], (package, run.stdout)


# --- deterministic resize -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_in", "size_out", "antialias"),
    [
        (32, 16, True),
        (64, 16, True),
        (48, 32, True),
        (16, 32, False),
        (8, 32, False),
        (5, 7, False),
    ],
)
def test_matrix_resize_equals_interpolate(size_in: int, size_out: int, antialias: bool) -> None:
    x = torch.randn(2, 3, size_in, size_in, dtype=torch.float64)
    ref = F.interpolate(
        x, size=(size_out, size_out), mode="bilinear", align_corners=False, antialias=antialias
    )
    got = matrix_resize(x, size_out, antialias=antialias)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-10)
    x32 = x.float().requires_grad_(True)
    x_ref = x.float().requires_grad_(True)
    w = torch.randn(ref.shape)
    (matrix_resize(x32, size_out, antialias=antialias) * w).sum().backward()
    F.interpolate(
        x_ref, size=(size_out, size_out), mode="bilinear", align_corners=False, antialias=antialias
    ).mul(w).sum().backward()
    assert torch.allclose(x32.grad, x_ref.grad, atol=1e-5)


def test_make_resize_default_is_interpolate() -> None:
    x = torch.randn(1, 1, 32, 32)
    ref = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(make_resize(False)(x, 16), ref)
    assert torch.allclose(make_resize(True)(x, 16), ref, atol=1e-6)


# --- guided step ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(unet):
    torch.manual_seed(0)
    channels = {layer.index: layer.channels for layer in decoder_layers(unet)}
    heads = DepthHeads(HeadConfig(hidden=(16,), time_dim=8), DepthNorm(), channels, 32).eval()
    prior = DepthPrior(
        prior_unet(PriorConfig(resolution=16, channels=(8, 16))).eval(),
        DDIMScheduler().__class__.from_config({"num_train_timesteps": 1000}),
        DepthNorm(),
    )
    return unet, heads.requires_grad_(False), prior


def _step(guidance: DepthGuidance, x: torch.Tensor, seeds: list[int]):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return guidance(x, torch.tensor(300), gens)


def test_default_runtime_guidance_is_bit_identical(parts) -> None:
    unet, heads, prior = parts
    cfg = GuidanceConfig(w_dc=40.0, w_dp=40.0, tau=100, scale_mode="mean", window=(0.0, 1.0))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = _step(DepthGuidance(unet, heads, prior, cfg), x, [1, 2, 3])
    fast = _step(RuntimeGuidance(unet, heads, prior, cfg, RuntimeConfig()), x, [1, 2, 3])
    assert torch.equal(plain.eps, fast.eps)
    assert torch.equal(plain.grad, fast.grad)
    assert torch.equal(plain.depth_strong, fast.depth_strong)


def test_chunked_guidance_same_per_sample(parts) -> None:
    """Chunking (``guidance_chunk``) preserves each sample's math exactly: per-sample losses,
    eval-mode heads and prior, per-sample generators, so sample i's ε, shift and losses do not
    depend on which other samples share its micro-batch. Only the float summation order inside
    the batched kernels can change with the batch size (4 vs 3 + 1) and the thread count, so the
    results agree up to that (``tests.numerics``: 1e-4 of the scale, for any thread count),
    sample by sample in the same order, far from any other pairing of the samples."""
    unet, heads, prior = parts
    cfg = GuidanceConfig(w_dc=40.0, w_dp=40.0, scale_mode="mean", window=(0.0, 1.0))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    whole = _step(RuntimeGuidance(unet, heads, prior, cfg), x, [5, 6, 7, 8])
    chunked = _step(
        RuntimeGuidance(unet, heads, prior, cfg, RuntimeConfig(guidance_chunk=3)), x, [5, 6, 7, 8]
    )
    assert whole.grad is not None and chunked.grad is not None
    assert_same_up_to_summation_order(chunked.eps, whole.eps, "eps")
    assert_same_up_to_summation_order(chunked.grad, whole.grad, "grad")
    assert_same_up_to_summation_order(chunked.depth_strong, whole.depth_strong, "depth_strong")
    assert chunked.losses.keys() == whole.losses.keys()
    for name in ("dc", "dp", "total", "grad_norm"):
        # (per-sample scalars: two samples may have close losses, so no distinctness check)
        got, want = chunked.losses[name], whole.losses[name]
        assert_same_up_to_summation_order(got, want, name, distinct=False)
    # τ is drawn from each sample's own generator, no arithmetic: exactly the same.
    assert torch.equal(whole.losses["tau"], chunked.losses["tau"])
    assert torch.equal(whole.losses["nan_guarded"], chunked.losses["nan_guarded"])
    # The check has teeth: the samples of the chunked step in a wrong order do not pass.
    with pytest.raises(AssertionError):
        assert_same_up_to_summation_order(chunked.grad[[1, 0, 2, 3]], whole.grad, "swapped")


def test_head_resolution_lowers_grid_keeps_shapes(parts) -> None:
    unet, heads, prior = parts
    cfg = GuidanceConfig(w_dc=40.0, w_dp=40.0, tau=100, scale_mode="mean", window=(0.0, 1.0))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    full = _step(RuntimeGuidance(unet, heads, prior, cfg), x, [1, 2])
    low = RuntimeGuidance(unet, heads, prior, cfg, RuntimeConfig(head_resolution=16))
    d_s, d_w = low.eval_heads(*_features(unet, heads, x))
    assert d_s.shape == d_w.shape == (2, 1, 16, 16)
    step = _step(low, x, [1, 2])
    assert step.depth_strong.shape == full.depth_strong.shape == (2, 1, 32, 32)
    assert step.grad.shape == x.shape and torch.isfinite(step.grad).all()
    assert not torch.equal(step.grad, full.grad)  # an approximation, not the same numbers
    cos = F.cosine_similarity(step.grad.flatten(1), full.grad.flatten(1)).min()
    assert cos > 0.5, cos  # but the shift points the same way
    with pytest.raises(DagError, match="head_resolution 64 exceeds"):
        RuntimeGuidance(unet, heads, prior, cfg, RuntimeConfig(head_resolution=64))


def _features(unet, heads, x):
    from dag_core.features import FeatureExtractor

    t = torch.full((x.shape[0],), 300)
    with torch.no_grad(), FeatureExtractor(unet, heads.blocks) as extract:
        _, feats = extract(x, t)
    return feats, t


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def test_deterministic_guidance_avoids_nondeterministic_cuda_kernels(parts) -> None:
    """The backward of bilinear interpolation (plain and antialiased) has no deterministic CUDA
    kernel; in deterministic mode the guided step must never call it — and match the fast mode."""
    unet, heads, prior = parts
    cfg = GuidanceConfig(w_dc=40.0, w_dp=40.0, tau=100, scale_mode="mean", window=(0.0, 1.0))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    fast, det = _OpLog(), _OpLog()
    with fast:
        ref = _step(RuntimeGuidance(unet, heads, prior, cfg), x, [1, 2])
    with det:
        got = _step(
            RuntimeGuidance(unet, heads, prior, cfg, RuntimeConfig(deterministic=True)), x, [1, 2]
        )
    bad = {"upsample_bilinear2d_backward", "_upsample_bilinear2d_aa_backward"}
    assert bad & fast.ops  # the default path does use them (so this test can fail)
    assert not bad & det.ops, bad & det.ops
    assert torch.allclose(got.grad, ref.grad, atol=1e-6, rtol=1e-4)
    assert torch.allclose(got.depth_strong, ref.depth_strong, atol=1e-5)


def test_bf16_guided_sampling_close_to_fp32(parts) -> None:
    unet, heads, prior = parts
    cfg = GuidanceConfig(w_dc=40.0, w_dp=40.0, scale_mode="mean", window=(0.0, 1.0))
    sched = make_scheduler(DDIMScheduler(num_train_timesteps=1000), "ddim", 3)
    ref = sample(unet, sched, [1, 2], guidance=RuntimeGuidance(unet, heads, prior, cfg))
    sched = make_scheduler(DDIMScheduler(num_train_timesteps=1000), "ddim", 3)
    rt = RuntimeConfig(precision="bf16", guidance_chunk=1)
    with rt.autocast("cpu"):
        got = sample(unet, sched, [1, 2], guidance=RuntimeGuidance(unet, heads, prior, cfg, rt))
    assert got.images.dtype == torch.float32
    assert not torch.equal(got.images, ref.images)
    assert (got.images - ref.images).abs().mean() < 0.05


def test_compile_regions_keeps_hooks_outside(parts) -> None:
    """Regional compile wraps the blocks' forward; the feature hooks still fire, outputs match.
    (The ``eager`` backend keeps this fast on CPU; the inductor backend is the GPU default.)"""
    from dag_core.unet_configs import tiny_unet

    unet, heads, _ = parts
    compiled = tiny_unet(32, seed=0).eval()
    names = compile_regions(compiled, backend="eager")
    assert any("resnets" in n for n in names) and any("attentions" in n for n in names)
    assert compile_regions(compiled, backend="eager") == []  # idempotent
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    f_ref, _ = _features(unet, heads, x)
    f_got, _ = _features(compiled, heads, x)
    assert len(f_got) == len(f_ref)
    for a, b in zip(f_ref, f_got, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


# --- synthesis and the GPU bench on CPU ---------------------------------------------------------


def test_render_shard_with_runtime_levers_is_reproducible(tmp_path: Path) -> None:
    """Deterministic + bf16 + low head resolution + micro-batches: same bytes twice; the runtime
    is recorded in the spec (so a resume never mixes runtimes) and in every row's meta."""
    import pyarrow.parquet as pq

    from dag_core.synthesis import SynthesisSpec, load_models, render_shard
    from tests.tiny_models import write_tiny_models

    paths = write_tiny_models(tmp_path / "models")
    models = load_models(paths["base_model"], paths["heads"], paths["prior"])
    rt = RuntimeConfig(
        device="cpu", precision="bf16", deterministic=True, head_resolution=16, guidance_chunk=1
    )
    spec = SynthesisSpec(
        num_samples=3,
        shard_size=3,
        steps=2,
        variants={"dag": {"tau": 100}},
        runtime=rt.result_record(),
    )
    assert spec.variant_spec("dag")["runtime"]["head_resolution"] == 16
    assert (
        SynthesisSpec(num_samples=3, shard_size=3, variants={"dag": {}}).variant_spec("dag")[
            "runtime"
        ]
        == {}
    )
    a = render_shard(models, spec, "dag", 0, tmp_path / "a", batch_size=2, runtime=rt)
    b = render_shard(models, spec, "dag", 0, tmp_path / "b", batch_size=2, runtime=rt)
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.column("rgb").to_pylist() == tb.column("rgb").to_pylist()
    assert ta.column("depth").to_pylist() == tb.column("depth").to_pylist()
    assert '"precision": "bf16"' in ta.column("meta")[0].as_py()
    plain = render_shard(models, spec, "dag", 0, tmp_path / "c", batch_size=2)
    assert pq.read_table(plain).column("rgb").to_pylist() != ta.column("rgb").to_pylist()


def test_bench_gpu_smoke_runs_on_cpu(tmp_path: Path) -> None:
    """``bench/bench_gpu.py --smoke``: every mode runs, the JSON has what a GPU run reports."""
    import json

    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/bench_gpu.py",
            "--smoke",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--repro-steps",
            "2",
            "--repro-modes",
            "dag_fp32_deterministic",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["device"] == "cpu"
    assert {"unguided_fp32", "dag_fp32", "dag_fp32_deterministic"} <= set(result["modes"])
    assert all(v > 0 for v in result["ms_per_step_median"].values())
    assert result["reproducibility"]["dag_fp32_deterministic"]["identical_bytes"] is True
    quality = result["vs_exact_fp32"]
    assert quality["dag_fp32_deterministic"]["shift_cosine_min"] > 0.9999
    assert set(quality) == {n for n, m in result["modes"].items() if m["guided"]} - {"dag_fp32"}


def test_prefetched_world_batches_are_the_same_batches() -> None:
    """Rendering ahead in worker processes changes when a batch is made, never what it holds."""
    from tasks.base_model import prefetched, world_batches

    batches = world_batches(32, 3, seed=1)
    ahead = prefetched(batches, 4, workers=2)
    for step in range(4):
        assert torch.equal(ahead(step), batches(step))
    with pytest.raises(DagError, match="in order"):
        prefetched(batches, 4, workers=1)(2)


@pytest.mark.parametrize(
    "path",
    ["params.yaml", "profiles/smoke.yaml", "profiles/bedroom-256.yaml", "profiles/world-gpu.yaml"],
)
def test_every_stage_of_every_profile_reads_the_runtime_anchor(path: str) -> None:
    """Each computing stage's group carries the shared ``runtime`` (one anchor), and every group
    passes its stage's schema, nested settings included (a profile typo fails here, not on a
    GPU)."""
    import yaml

    from flows.schema.stages import SCHEMAS, validate_stage

    data = yaml.safe_load((REPO / path).read_text())
    RuntimeConfig.from_params(data["runtime"])
    for stage, schema in SCHEMAS.items():
        group = data[stage]
        if "runtime" in schema.model_fields:  # every stage that computes (not the report)
            assert group["runtime"] == data["runtime"], stage
        validate_stage(stage, group, files=False)


def test_accuracy_at_head_resolution_measures_the_lever(unet, scheduler) -> None:
    """At the heads' own size it is exactly :func:`accuracy_vs_t`; at 8² (of 32²) it measures
    the coarser heads on the same pairs and noise — here the map has 4×4 structure, so the loss
    of accuracy is visible but bounded."""
    from dag_core.heads import random_batches, train_heads
    from dag_core.probe import accuracy_at_head_resolution, accuracy_vs_t

    def pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
        b = F.interpolate(low, 32, mode="bilinear", align_corners=False)
        return (b * 2 - 1).expand(-1, 3, -1, -1).clone(), 0.5 + 4 * b

    cfg = HeadConfig(hidden=(16,), time_dim=8, steps=30, batch_size=4, pixels_per_image=256)
    train, held = pairs(16, 0), pairs(6, 1)
    heads, _ = train_heads(
        unet, scheduler, random_batches(*train, 4), cfg, DepthNorm(), log=lambda _: None
    )
    full = accuracy_vs_t(unet, scheduler, heads, held, [10])
    same = accuracy_at_head_resolution(unet, scheduler, heads, held, [10], 32)
    for a, b in zip(full, same, strict=True):
        assert a["branch"] == b["branch"]
        assert a["abs_rel"] == pytest.approx(b["abs_rel"], rel=1e-5)
    low = accuracy_at_head_resolution(unet, scheduler, heads, held, [10], 8)
    assert [r["resolution"] for r in low] == [8, 8]
    assert all(0 <= r["abs_rel"] < 1 for r in low)
    assert low[0]["abs_rel"] != full[0]["abs_rel"]
    with pytest.raises(DagError, match="head resolution 64"):
        accuracy_at_head_resolution(unet, scheduler, heads, held, [10], 64)


@pytest.mark.parametrize(
    "path", sorted(p.name for p in (REPO / "profiles").glob("embedded-base*.yaml"))
)
def test_embedded_base_model_training_profiles_are_valid(path: str) -> None:
    """The profiles that trained the shipped base model (its README) still parse: the stage's
    schema and TrainConfig accept every key, and each stage after the first warm-starts from the
    shipped weights into its own folder, never into the repository's copy."""
    import yaml

    from dag_core.backbone import TrainConfig
    from flows.schema.stages import validate_stage

    data = yaml.safe_load((REPO / "profiles" / path).read_text())
    assert set(data) == {"base_model"}
    group = data["base_model"]
    validate_stage("base_model", group, files=False)
    config = TrainConfig.from_params(group["train"])
    assert group["pretrained"] is None
    if path != "embedded-base.yaml":
        assert config.init_from == "dag_core/embedded/world-ddpm-32"
        assert not group["out_dir"].startswith("dag_core/")
