"""Whole-directory atomic outputs: a failed run never destroys what an earlier run wrote.

A stage builds its output in a hidden sibling directory and swaps it into place only on success;
on any exception the partial directory is removed and the previous output is untouched.
(Shard-level atomicity, for resumable writers, lives in :mod:`dag_core.shards`.)
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{token}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
