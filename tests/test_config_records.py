"""The records written from settings are byte-identical to before the settings were validated
by pydantic: shard rows carry ``asdict(GuidanceConfig)``, synthesis outputs ``_run_spec.json`` /
``_spec.json``, model folders their configs. ``config_records.json`` was written by main's code
(e32d5da, before dag_core/configs existed) for exactly the objects built below; the one
intended change since is ``downstream_config``, which gained the training rules of the downstream
regimes (``finetune_fraction``, ``mix_fraction``, ``validate_every``) after its seven fields."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from dag_core.backbone import TrainConfig
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import DownstreamConfig
from dag_core.guidance import GuidanceConfig
from dag_core.heads import HeadConfig
from dag_core.prior import PriorConfig
from dag_core.runtime import RuntimeConfig
from dag_core.synthesis import SynthesisSpec, guidance_config

EXPECTED = json.loads((Path(__file__).parent / "config_records.json").read_text())
PIPELINE = {
    "scale_mode": "paper",
    "w_dc": 0.3,
    "w_dp": 0.5,
    "tau": "random",
    "window": [0.0, 0.6],
    "grad_clip": None,
}
VARIANTS = {
    "unguided": {"w_dc": 0.0, "w_dp": 0.0},
    "dcg": {"w_dp": 0.0},
    "dpg": {"w_dc": 0.0},
    "dag": {},
}


def _spec() -> SynthesisSpec:
    runtime = {
        "precision": "fp32",
        "deterministic": False,
        "head_resolution": None,
        "compile": False,
        "channels_last": False,
        "device_type": "cpu",
    }
    spec = SynthesisSpec(
        num_samples=192,
        shard_size=64,
        seed=0,
        sampler="ddim",
        steps=20,
        eta=0.0,
        depth_dtype="float16",
        variants={k: {**PIPELINE, **v} for k, v in VARIANTS.items()},
        runtime=runtime,
    )
    hashes = {
        "base_model": "75b97bb833b565b8",
        "heads": "0123456789abcdef",
        "prior": "fedcba9876543210",
    }
    return SynthesisSpec(**{**spec.__dict__, "hashes": hashes})


RECORDS = {
    # ints stay ints (w_dc 0, grad_clip 1), the window becomes floats, field order is kept
    "guidance_full": lambda: json.dumps(
        asdict(
            GuidanceConfig(
                w_dc=0,
                w_dp=0.5,
                tau=100,
                tau_min=10,
                tau_max=400,
                window=(0, 1),
                grad_clip=1,
                grad_norm=True,
                dpg_gradient="sds",
                grad_blur=1.5,
                nan_guard=False,
                scale_mode="paper",
            )
        )
    ),
    "guidance_pipeline_dag": lambda: json.dumps(asdict(guidance_config("dag", PIPELINE))),
    "guidance_remedy": lambda: json.dumps(
        asdict(
            guidance_config(
                "r",
                {
                    "tau": "random",
                    "w_dc": 0,
                    "w_dp": 1.0,
                    "scale_mode": "paper",
                    "window": [0.0, 0.6],
                    "dpg_gradient": "sds",
                },
            )
        )
    ),
    "spec_run": lambda: json.dumps(_spec().__dict__, indent=2, sort_keys=True) + "\n",
    "spec_variant_dag": lambda: (
        json.dumps(_spec().variant_spec("dag"), indent=2, sort_keys=True) + "\n"
    ),
    # heads.json's config record (an ensemble of K > 1 adds "ensemble"; K = 1 writes what main did)
    "head_config": lambda: json.dumps(
        HeadConfig(
            strong_blocks=[2, 4],
            weak_blocks=[6],
            hidden=[16],
            time_dim=8,
            steps=5,
            batch_size=2,
            pixels_per_image=4096,
            lr=0.001,
            t_max=600,
        ).record()
    ),
    "prior_config": lambda: json.dumps(
        PriorConfig(resolution=16, channels=[8, 16], steps=3, batch_size=4).to_dict()
    ),
    "downstream_config": lambda: json.dumps(
        DownstreamConfig(channels=[8, 16], steps=3, batch_size=4).to_dict()
    ),
    "train_config": lambda: json.dumps(
        asdict(
            TrainConfig(channels=[8, 8, 16, 16, 16, 16], norm_num_groups=4, batch_size=4, steps=3)
        )
    ),
    "depth_norm": lambda: json.dumps(DepthNorm(min_depth=0.5, max_depth=20).to_dict()),
    "runtime": lambda: json.dumps(RuntimeConfig(device="cpu", head_resolution=16).to_dict()),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_record_is_byte_identical_to_before(name: str) -> None:
    assert RECORDS[name]() == EXPECTED[name]


def test_a_spec_written_from_a_partial_guidance_group_still_matches(tmp_path: Path) -> None:
    """Datasets rendered before params.yaml listed every guidance field resume as the same spec:
    their effective settings, and so their shard bytes, are the same."""
    from dag_core.synthesis import SPEC_NAME, spec_matches

    (tmp_path / SPEC_NAME).write_text(EXPECTED["spec_variant_dag"])  # main's record
    complete = {**GuidanceConfig().to_dict(), **PIPELINE}  # every field given
    spec = _spec()
    full = SynthesisSpec(**{**spec.__dict__, "variants": {"dag": complete}})
    assert full.variant_spec("dag") != json.loads(EXPECTED["spec_variant_dag"])
    assert spec_matches(tmp_path, full.variant_spec("dag"))
    other = SynthesisSpec(**{**spec.__dict__, "variants": {"dag": {**complete, "w_dc": 0.4}}})
    assert not spec_matches(tmp_path, other.variant_spec("dag"))
    steps = SynthesisSpec(**{**full.__dict__, "steps": 21})
    assert not spec_matches(tmp_path, steps.variant_spec("dag"))
