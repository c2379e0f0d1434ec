"""Shared pytest configuration: thread settings, the 50 real NYU pairs, tiny models, Prefect."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# Loaded before any test module imports numpy. On a small shared CPU, OpenBLAS's spin-waiting
# worker threads make large LAPACK calls several times slower (torch-fidelity's FID takes the
# eigenvalues of a 2048×2048 matrix: ~30 s with 2 threads on a busy 2-core box, ~5 s with 1).
# An explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Idle OpenMP threads sleep instead of spinning (the tests run servers and workers beside torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MKL's conditional numerical reproducibility (dag_core sets MKL_CBWR), before any test loads torch.
import dag_core  # noqa: F401

# A suite started as a background job of a non-interactive shell (`.ci/run &`) inherits SIGINT
# ignored; Python then keeps SIG_IGN, every command the tests start inherits it, and
# `prefect worker start` (stopped with SIGINT, as Ctrl-C stops it) would ignore its stop signal
# and hang the test. Restore the default handler: the tests stop commands as a user does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

NYU_TEST50_ENV = "DAG_NYU_TEST50"
NYU_TEST50_DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/nyu2_test50"


@pytest.fixture(scope="session")
def nyu_test50_dir() -> Path:
    """Folder with ``nyu2_test.csv`` and 50 real RGB / 16-bit depth PNG pairs (read-only).

    ``$DAG_NYU_TEST50`` overrides the default ``<repo>/../shared/data/nyu2_test50``. A missing
    folder fails the test: the NYU readers are only trusted on real data.
    """
    path = Path(os.environ.get(NYU_TEST50_ENV) or NYU_TEST50_DEFAULT)
    if not (path / "nyu2_test.csv").is_file():
        pytest.fail(
            f"NYU test fixture not found: {path}/nyu2_test.csv; set ${NYU_TEST50_ENV} to a folder "
            "holding nyu2_test.csv and its 50 colors/depth PNG pairs"
        )
    return path


@pytest.fixture(scope="module")
def unet():  # torch is imported lazily: the environment above must be set first
    """A random U-Net with the real google/ddpm-church-256 block layout, at 32²."""
    from dag_core.unet_configs import tiny_unet

    return tiny_unet(32, seed=0).eval()


@pytest.fixture(scope="module")
def scheduler():
    """The church-256 DDPM scheduler (linear β, T = 1000)."""
    from diffusers import DDPMScheduler

    from dag_core.unet_configs import CHURCH_256_SCHEDULER

    return DDPMScheduler(**CHURCH_256_SCHEDULER)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API URL of a real ``prefect server`` on 127.0.0.1 (stopped after the module)."""
    from tests.prefect_server import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect")) as url:
        yield url


#: The test files that take longest (``pytest --durations``: the smoke ``dvc repro`` ~5 min,
#: the scale-out, bad-input and synthesis scenarios 2-4 min each), longest first.
LONGEST_FIRST = ("test_pipeline_smoke", "test_scale_out", "test_bad_input", "test_synthesize")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first: ``make test`` hands whole files to its workers in this order
    (``--dist loadfile --no-loadscope-reorder``), so they start at once and the short files
    fill in behind them instead of one long file starting last."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
