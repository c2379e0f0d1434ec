"""Benchmark: the FID Inception-v3 forward in contiguous vs channels_last layout, side by side.

Every dFID/FID in the pipeline (stages ``dfid`` and ``sweep``) passes images and depth maps
through fid-helper's TorchScript Inception-v3 at 299²: on 2 CPU cores that forward is most of the
two stages' time. :class:`dag_core.metrics.fid.FidHelperInceptionV3` feeds it channels_last; this
measures the speed ratio and how far the features move, on the same batch, alternating the two
layouts ``--repeats`` times. Writes bench/results/fid.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dag_core.metrics.fid import _fidhelper_module  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/results/fid.json"))
    args = ap.parse_args()
    net = _fidhelper_module()
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 3, 299, 299))
    x = (torch.from_numpy(images).float() - 128) / 128
    layouts = {
        "contiguous": x.contiguous(),
        "channels_last": x.contiguous(memory_format=torch.channels_last),
    }
    times: dict[str, list[float]] = {name: [] for name in layouts}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for batch in layouts.values():
            net(batch[:2])  # warm-up
        for _ in range(args.repeats):
            for name, batch in layouts.items():
                t = time.perf_counter()
                out[name] = net(batch)
                times[name].append(time.perf_counter() - t)
    a, b = out["contiguous"], out["channels_last"]
    best = {name: min(ts) for name, ts in times.items()}
    result = {
        "benchmark": "fid_inception_layout",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "batch": args.batch,
        "repeats": args.repeats,
        "seconds_best": best,
        "images_per_s": {name: args.batch / s for name, s in best.items()},
        "speedup_channels_last": best["contiguous"] / best["channels_last"],
        "features_max_rel_diff": float((a - b).abs().max() / a.abs().max()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
