"""Guided sampling at real size on one GPU: every runtime lever side by side in one run.

The setting of issue 12: a random U-Net with the google/ddpm-church-256 (= bedroom-256) layout at
256², depth heads with hidden (256, 128) and time_dim 128 at 256², a depth prior at 128² with
channels (64, 128, 256, 256) and 2 layers per block, batch 16, DDIM. Each mode is one
:class:`dag_core.runtime.RuntimeConfig`; per mode the bench measures, interleaved over repeats:

* ms per DDIM step (median) and img/s at ``--ddim-steps`` steps with guidance at every step;
* peak GPU memory of the mode (``torch.cuda.max_memory_allocated``);
* how far its guided shift and d^S_t are from the exact fp32 mode on the same x_t (cosine and
  relative L2) — the cost of the approximations (head resolution, bf16);
* reproducibility: the same ``--repro-steps`` DDIM steps of guided sampling run twice (same
  seeds, same batch) — identical bytes or the max |Δx|.

and checks the issue's targets (DAG ≥ 3 img/s, unguided ≥ 8 img/s, DAG/unguided ≤ 2.5×, peak
≤ 24 GB at batch 16, deterministic ≤ 1.3× its fast twin).
Writes ``bench/results/gpu-<device>.json``.

    python bench/bench_gpu.py                 # on the GPU (a few minutes; add --compile)
    python bench/bench_gpu.py --smoke         # tiny sizes, any device (the CPU test runs this;
                                              # without a GPU the plain command does the same)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from dag_core.depthnorm import DepthNorm
from dag_core.features import decoder_layers
from dag_core.guidance import GuidanceConfig
from dag_core.guidance_runtime import RuntimeGuidance
from dag_core.heads import DepthHeads, HeadConfig
from dag_core.prior import DepthPrior, PriorConfig, prior_unet
from dag_core.runtime import RuntimeConfig
from dag_core.sampling import make_scheduler, per_sample_generators, sample
from dag_core.unet_configs import CHURCH_256_CONFIG, CHURCH_256_SCHEDULER, tiny_unet

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1024**3
#: the issue's guided setting: w = 40 in mean mode at every step (GuidanceConfig's defaults are
#: now params.yaml's, paper mode with w 0.3 / 0.5 in a window)
ISSUE_GUIDANCE = {"w_dc": 40.0, "w_dp": 40.0, "scale_mode": "mean", "window": (0.0, 1.0)}


@dataclass(frozen=True)
class Size:
    resolution: int
    head_hidden: tuple[int, ...]
    head_time_dim: int
    prior_resolution: int
    prior_channels: tuple[int, ...]
    prior_layers: int
    batch: int
    low_res: tuple[int, int]  # the two head evaluation resolutions tried
    chunk: int


FULL = Size(256, (256, 128), 128, 128, (64, 128, 256, 256), 2, 16, (128, 64), 8)
SMOKE = Size(32, (16,), 8, 16, (8, 16), 1, 2, (16, 8), 1)


def build(size: Size, device: torch.device) -> tuple[UNet2DModel, DepthHeads, DepthPrior]:
    """Random base U-Net (church-256 layout), heads and prior of the given size, frozen."""
    if size.resolution == 256:
        torch.manual_seed(0)
        unet = UNet2DModel(**CHURCH_256_CONFIG)
    else:
        unet = tiny_unet(size.resolution, seed=0)
    unet = unet.eval().requires_grad_(False).to(device)
    cfg = HeadConfig(hidden=size.head_hidden, time_dim=size.head_time_dim)
    layers = decoder_layers(unet)
    channels = {k: layers[k].channels for k in (*cfg.strong_blocks, *cfg.weak_blocks)}
    torch.manual_seed(0)
    heads = DepthHeads(cfg, DepthNorm(), channels, size.resolution).eval().requires_grad_(False)
    pcfg = PriorConfig(
        resolution=size.prior_resolution,
        channels=size.prior_channels,
        layers_per_block=size.prior_layers,
    )
    prior = DepthPrior(
        prior_unet(pcfg).eval().requires_grad_(False).to(device),
        DDPMScheduler(num_train_timesteps=1000),
        DepthNorm(),
    )
    return unet, heads.to(device), prior


def modes(size: Size, with_compile: bool) -> dict[str, tuple[bool, RuntimeConfig]]:
    """name → (guided, runtime). ``dag_fp32`` is today's exact method."""
    hi, lo = size.low_res
    lean = RuntimeConfig(precision="bf16", head_resolution=lo, guidance_chunk=size.chunk)
    out = {
        "unguided_fp32": (False, RuntimeConfig()),
        "unguided_bf16": (False, RuntimeConfig(precision="bf16")),
        "dag_fp32": (True, RuntimeConfig()),
        "dag_fp32_deterministic": (True, RuntimeConfig(deterministic=True)),
        f"dag_head{hi}": (True, RuntimeConfig(head_resolution=hi)),
        f"dag_head{lo}": (True, RuntimeConfig(head_resolution=lo)),
        f"dag_head{lo}_bf16": (True, RuntimeConfig(precision="bf16", head_resolution=lo)),
        f"dag_head{lo}_bf16_chunk{size.chunk}": (True, lean),
        f"dag_head{lo}_bf16_chunk{size.chunk}_deterministic": (
            True,
            replace(lean, deterministic=True),
        ),
    }
    if with_compile:
        out["unguided_bf16_compiled"] = (
            False,
            RuntimeConfig(precision="bf16", channels_last=True, compile=True),
        )
        out[f"dag_head{lo}_bf16_chunk{size.chunk}_compiled"] = (
            True,
            replace(lean, channels_last=True, compile=True),
        )
    return out


def _reset_backends() -> None:
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False
    if torch.cuda.is_available():
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Mode:
    """One runtime mode: its own (possibly compiled / channels_last) U-Net and one step fn."""

    def __init__(
        self,
        guided: bool,
        rt: RuntimeConfig,
        parts: tuple[UNet2DModel, DepthHeads, DepthPrior],
        device: torch.device,
    ) -> None:
        unet, heads, prior = parts
        if rt.compile or rt.channels_last:
            unet = copy.deepcopy(unet)
            rt.prepare(unet, device)
        self.rt, self.unet, self.device, self.guided = rt, unet, device, guided
        self.guidance = (
            RuntimeGuidance(unet, heads, prior, GuidanceConfig(**ISSUE_GUIDANCE), rt)
            if guided
            else None
        )

    def activate(self) -> None:
        _reset_backends()
        self.rt.apply()

    def step(self, x: torch.Tensor, t: torch.Tensor, seeds: list[int]) -> Any:
        """One sampler step's network work: ε (unguided) or the guided step (ε + shift)."""
        if self.rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.rt.autocast(self.device):
            if self.guidance is None:
                with torch.no_grad():
                    return self.unet(x, t).sample
            gens = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
            return self.guidance(x, t, gens)

    def sample(self, seeds: list[int], steps: int) -> torch.Tensor:
        """``steps`` DDIM steps of (guided) sampling; the final x as float32."""
        self.activate()
        scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddim", steps)
        with self.rt.autocast(self.device):
            result = sample(self.unet, scheduler, seeds, guidance=self.guidance)
        return result.images.float()


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _compare(got: Any, ref: Any) -> dict[str, float]:
    """Cosine (min over samples) and relative L2 of the shift, relative L2 of d^S_t."""
    a, b = got.grad.float().flatten(1), ref.grad.float().flatten(1)
    d_a, d_b = got.depth_strong.float(), ref.depth_strong.float()
    return {
        "shift_cosine_min": float(F.cosine_similarity(a, b).min()),
        "shift_rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-12)),
        "depth_rel_l2": float((d_a - d_b).norm() / d_b.norm().clamp_min(1e-12)),
    }


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu"


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = SMOKE if args.smoke else FULL
    if args.batch:
        size = replace(size, batch=args.batch)
    device = RuntimeConfig(device=args.device).apply()
    parts = build(size, device)
    table = modes(size, args.compile)
    built: dict[str, Mode] = {}
    compile_s: dict[str, float] = {}
    seeds = list(range(size.batch))
    gens = per_sample_generators(seeds, device)
    x = torch.randn(
        (size.batch, 3, size.resolution, size.resolution), generator=gens[0], device=device
    )
    t = torch.full((size.batch,), 500, dtype=torch.long, device=device)
    for name, (guided, rt) in table.items():
        built[name] = Mode(guided, rt, parts, device)
        built[name].activate()
        compile_s[name] = _time(lambda m=built[name]: m.step(x, t, seeds), device)  # warm-up
    per_step: dict[str, list[float]] = {name: [] for name in table}
    peak: dict[str, float | None] = {}
    for name, mode in built.items():  # peak memory, one mode at a time
        mode.activate()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        mode.step(x, t, seeds)
        _sync(device)
        peak[name] = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
    for _ in range(args.repeats):  # interleaved: load from elsewhere hits every mode alike
        for name, mode in built.items():
            mode.activate()
            per_step[name].append(_time(lambda m=mode: m.step(x, t, seeds), device))
    median = {name: statistics.median(v) for name, v in per_step.items()}

    exact = built["dag_fp32"]
    exact.activate()
    ref = exact.step(x, t, seeds)
    quality = {}
    for name, mode in built.items():
        if mode.guided and name != "dag_fp32":
            mode.activate()
            quality[name] = _compare(mode.step(x, t, seeds), ref)

    repro = {}
    for name in args.repro_modes or [n for n in built if built[n].guided]:
        first = built[name].sample(seeds, args.repro_steps)
        second = built[name].sample(seeds, args.repro_steps)
        repro[name] = {
            "identical_bytes": bool(torch.equal(first, second)),
            "max_abs_diff": float((first - second).abs().max()),
        }

    img_s = {name: size.batch / (args.ddim_steps * median[name]) for name in built}
    ratios = {name: median[name] / median["unguided_fp32"] for name in built if built[name].guided}
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "platform": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda,
        "setting": {
            "unet": "church-256 layout, random" if size.resolution == 256 else "tiny church",
            "resolution": size.resolution,
            "heads": {"hidden": list(size.head_hidden), "time_dim": size.head_time_dim},
            "prior": {
                "resolution": size.prior_resolution,
                "channels": list(size.prior_channels),
                "layers_per_block": size.prior_layers,
            },
            "batch": size.batch,
            "ddim_steps": args.ddim_steps,
            "guided_every_step": True,
            "repeats": args.repeats,
        },
        "modes": {name: {"guided": m.guided, **m.rt.to_dict()} for name, m in built.items()},
        "ms_per_step_median": {k: v * 1e3 for k, v in median.items()},
        "ms_per_step_all": {k: [s * 1e3 for s in v] for k, v in per_step.items()},
        "first_call_s": compile_s,
        "img_per_s": img_s,
        "guided_over_unguided_fp32": ratios,
        "peak_memory_gb": peak,
        "vs_exact_fp32": quality,
        "reproducibility": {"ddim_steps": args.repro_steps, **repro},
    }
    if not args.smoke:
        result["targets"] = targets(result, size)
    return result


def targets(result: dict[str, Any], size: Size) -> dict[str, Any]:
    """The issue's targets against the fastest guided mode that fits 24 GB, and the best
    unguided mode; deterministic lean vs its fast twin."""
    img_s, peak = result["img_per_s"], result["peak_memory_gb"]
    guided = [n for n, m in result["modes"].items() if m["guided"]]
    fitting = [n for n in guided if peak[n] is not None and peak[n] <= 24.0] or guided
    dag = max(fitting, key=lambda n: img_s[n])
    unguided = max((n for n in img_s if n not in guided), key=lambda n: img_s[n])
    ms = result["ms_per_step_median"]
    lean = f"dag_head{size.low_res[1]}_bf16_chunk{size.chunk}"
    return {
        "dag_mode": dag,
        "unguided_mode": unguided,
        "dag_img_s": img_s[dag],
        "dag_img_s_ok": img_s[dag] >= 3.0,
        "unguided_img_s": img_s[unguided],
        "unguided_img_s_ok": img_s[unguided] >= 8.0,
        "dag_over_unguided": ms[dag] / ms[unguided],
        "dag_over_unguided_ok": ms[dag] / ms[unguided] <= 2.5,
        "dag_peak_gb": peak[dag],
        "dag_peak_ok": peak[dag] is not None and peak[dag] <= 24.0,
        "deterministic_over_fast": ms[f"{lean}_deterministic"] / ms[lean],
        "deterministic_over_fast_ok": ms[f"{lean}_deterministic"] / ms[lean] <= 1.3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test of the code)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 (smoke: 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--repro-steps", type=int, default=6)
    parser.add_argument("--repro-modes", nargs="*", default=None)
    parser.add_argument("--compile", action="store_true", help="add torch.compile modes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.smoke and RuntimeConfig(device=args.device).resolve_device().type != "cuda":
        print("no GPU: the 256² setting needs one; running --smoke instead (make bench on CPU)")
        args.smoke = True
    result = run(args)
    slug = device_slug(torch.device(result["device"]))
    out = args.out or RESULTS / (f"gpu-smoke-{slug}.json" if args.smoke else f"gpu-{slug}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, ms in result["ms_per_step_median"].items():
        peak = result["peak_memory_gb"][name]
        mem = f"{peak:6.1f} GB" if peak is not None else "     -   "
        print(f"{name:>44}: {ms:9.1f} ms/step {result['img_per_s'][name]:7.2f} img/s {mem}")
    for name, rep in result["reproducibility"].items():
        if not isinstance(rep, dict):
            continue
        print(f"{name:>44}: repro identical={rep['identical_bytes']} max|dx|={rep['max_abs_diff']}")
    if "targets" in result:
        print(json.dumps(result["targets"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
