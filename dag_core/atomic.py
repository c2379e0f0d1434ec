"""Atomic outputs: a failed or killed run never leaves a half-written file or folder behind.

Files: every output (shards, metrics JSON, CSVs, Markdown tables, figures, weights) is written to
a dot-prefixed temporary file ``.<name>.tmp-<pid>`` in the target's folder, flushed and fsynced,
then renamed over the target with :func:`os.replace` (atomic on POSIX) and the folder fsynced, so
a reader sees the old file or the new one, never a part. On any exception the temporary file is
removed and the old file is untouched. :func:`write_text_atomic` / :func:`write_bytes_atomic`
write a string or bytes; :func:`atomic_open` yields a file object (``csv.writer``, ``json.dump``);
:func:`atomic_path` yields a temporary path for writers that take a file name
(``safetensors.torch.save_file``, ``PIL.Image.save``); :func:`save_figure` saves a matplotlib
figure.

Folders: :func:`replace_dir` builds a stage's output in a hidden sibling folder and swaps it into
place only on success; on any exception the partial folder is removed and the previous output is
untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: str | Path) -> Path:
    """The temporary sibling ``.<name>.tmp-<pid>`` a file is written to before its rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` when it names no file (e.g. a full disk)."""
    if exc.filename is None:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    return exc


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it is fsynced and renamed to
    ``path``. The folder is created if missing. The temporary name does not keep ``path``'s
    suffix: writers that infer a format from the name must be told it (``format="png"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` atomically when the block succeeds.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as fh:
        yield fh
        fh.flush()


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a binary temporary file that atomically becomes ``path``."""
    with atomic_open(path, "wb") as fh:
        write(fh)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``Path(path).write_bytes(data)``, atomically (folder created if missing)."""
    return write_atomic(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)`` in UTF-8, atomically (folder created if missing)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path, **savefig_kw: Any) -> Path:
    """``fig.savefig(path, **savefig_kw)`` for a matplotlib figure, atomically.

    The format comes from ``path``'s suffix (as ``savefig`` infers it), else matplotlib's
    ``savefig.format`` setting, unless ``format=`` is given.
    """
    path = Path(path)
    fmt = savefig_kw.pop("format", None) or path.suffix[1:].lower()
    if not fmt:
        import matplotlib

        fmt = matplotlib.rcParams["savefig.format"]
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kw)
    return path


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
