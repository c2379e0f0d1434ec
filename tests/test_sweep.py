"""Sweep stage helpers and the dfid stage's new checks (bad settings fail before any sampling)."""

from __future__ import annotations

import pytest

from dag_core.errors import DagError
from dag_core.sweep import (
    check_remedies,
    check_sweep,
    mode_scales,
    remedy_settings,
    series_name,
    variant_name,
)
from flows.dfid import dfid


def test_series_name() -> None:
    assert series_name("paper", [0.0, 0.6]) == "paper_0-0.6"
    assert series_name("mean", (0.25, 1)) == "mean_0.25-1"


@pytest.mark.parametrize(
    ("modes", "scales", "windows", "n", "match"),
    [
        (["classifier"], [0, 40], [[0, 1]], 8, r"sweep.modes\[0\]='classifier'"),
        (["paper"], [-1], [[0, 1]], 8, r"sweep.scales\[0\]=-1: must be >= 0"),
        (["paper"], {"paper": [1, -1.0]}, [[0, 1]], 8, r"sweep.scales.paper\[1\]=-1.0: must be"),
        (["paper"], [40], [[0, 1], [0.7, 0.2]], 8, r"sweep.windows\[1\]=\[0.7, 0.2\]"),
        (["paper"], [40], [[0, 1]], 1, "num_samples"),
        ([], [40], [[0, 1]], 8, "at least one mode"),
        (["paper"], {"paper": [1], "mena": [40]}, [[0, 1]], 8, "unknown mode"),
        (["paper", "mean"], {"paper": [1]}, [[0, 1]], 8, "no scales for mode 'mean'"),
    ],
)
def test_bad_sweeps_fail_before_sampling(modes, scales, windows, n, match) -> None:
    with pytest.raises(DagError, match=match):
        check_sweep(modes, scales, windows, n)


def test_dfid_checks_reference_variant_and_n_boot(tmp_path) -> None:
    with pytest.raises(DagError, match="reference_variant='ungided'"):
        dfid.fn(synthetic=str(tmp_path), variants=["unguided", "dag"], reference_variant="ungided")
    with pytest.raises(DagError, match="n_boot"):
        dfid.fn(synthetic=str(tmp_path), variants=["unguided"], n_boot=3)


def test_mode_scales() -> None:
    assert mode_scales([40, 1, 0], "paper") == [0.0, 1.0, 40.0]
    assert variant_name("paper_0-0.6-w0.3") == "paper_0-0_6-w0_3"
    assert mode_scales({"paper": [1, 3], "mean": [100]}, "mean") == [0.0, 100.0]


@pytest.mark.parametrize(
    ("remedies", "match"),
    [
        ({"paper_0-0.6": {"scales": [1]}}, "new plain name"),
        ({"bad name": {"scales": [1]}}, "new plain name"),
        ({"norm": {"scales": []}}, "non-empty scales"),
        ({"norm": {"scales": [1], "guidnace": {}}}, "must map scales and guidance"),
        ({"norm": {"scales": ["x"]}}, r"remedies\.norm\.scales\[0\]='x': expected a number"),
        ({"norm": {"scales": [1], "guidance": {"grad_norm": "yes"}}}, "grad_norm"),
        ({"norm": {"scales": [1], "guidance": {"dpg_gradient": "free"}}}, "dpg_gradient"),
        ({"norm": {"scales": [1], "guidance": {"clip": 3}}}, "unknown setting.*guidance.clip"),
        ({"off": {"scales": [1], "guidance": {"w_dc": 0, "w_dp": 0}}}, "one term off"),
        ({"fix": {"scales": [1], "guidance": {"w_dp": 5}}}, "one term off"),
        ([{"scales": [1]}], "must map names"),
    ],
)
def test_bad_remedies_fail_before_sampling(remedies, match) -> None:
    with pytest.raises(DagError, match=match):
        check_remedies(remedies, {"tau": "random"}, ["paper"], [[0.0, 0.6]])


def test_remedy_settings_override_the_shared_point() -> None:
    remedy = {"scales": [3], "guidance": {"w_dc": 0, "window": [0.0, 0.3]}}
    got = remedy_settings({"tau": "random"}, ["paper", "mean"], [[0.0, 0.6]], remedy, 3.0)
    assert got == {
        "tau": "random",
        "scale_mode": "paper",
        "window": [0.0, 0.3],
        "w_dc": 0,
        "w_dp": 3.0,
    }
