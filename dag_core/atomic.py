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

Write errors name the file the user knows: a library that writes (safetensors, diffusers'
``save_pretrained``, pyarrow, PIL, matplotlib, ``json.dump``) fails on a file-size limit, a full
disk or a permission problem with its own exception or with an :class:`OSError` that names a
temporary file or none. Both helpers turn such an error into ``OSError(errno, strerror, PATH)``
(:func:`write_error`: the errno recovered from a library's message such as safetensors' ``File
too large (os error 27)``), PATH being the final path (every ``.<name>.tmp-...`` part of a
temporary name mapped back to ``<name>``; inside :func:`replace_dir`, an error that names no file
names the one being written: the file argument of the writer in its traceback, else the newest
file in the temporary folder). The command line then
prints ``error: [Errno 27] File too large: PATH`` and exits 2 (:mod:`flows.cli`). Weights and
``torch.save`` states are better serialised to bytes first (:func:`write_bytes_atomic`): the
error is then Python's own.

Litter: ``kill -9`` leaves a temporary file or folder behind. The next :func:`atomic_path` or
:func:`replace_dir` on the same target removes those siblings whose writer is gone (the pid in
the name is not a live process on this machine); a live writer's, and any name that does not
parse, are kept.
"""

from __future__ import annotations

import errno
import os
import re
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


#: a temporary name of this module: ``.<name>.tmp-<pid>`` or ``.<name>.{tmp,old}-<pid>-<hex>``
_TEMP_PART = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-[0-9a-f]{8})?$")
#: an OS error inside a library's own exception: Rust's ``(os error 27)`` / ``Os { code: 27``
_ERRNO_TEXT = re.compile(r"\(os error (\d+)\)|\bOs \{ code: (\d+)")
#: errnos that mean "this write failed" whatever file the library was at (file-size limit, full
#: disk or quota, read-only file system, permissions)
WRITE_ERRNOS = frozenset(
    {errno.EFBIG, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
)


def final_path(path: str | Path) -> Path:
    """``path`` with every temporary part (``.<name>.tmp-<pid>[-<hex>]``) mapped back to
    ``<name>``: the path the user asked for."""
    parts = [m.group("name") if (m := _TEMP_PART.match(p)) else p for p in Path(path).parts]
    return Path(*parts)


def _errno_of(exc: BaseException) -> int | None:
    """The OS errno an exception carries: an OSError's own, or one a library wrote into its
    message (safetensors: ``I/O error: File too large (os error 27)``)."""
    if isinstance(exc, OSError):
        return exc.errno
    match = _ERRNO_TEXT.search(str(exc))
    return int(match.group(1) or match.group(2)) if match else None


def write_error(exc: BaseException, path: str | Path) -> OSError | None:
    """``exc``, raised while writing ``path``, as an OSError naming the final path (see the
    module's docstring): ``exc`` itself when it already does, a new OSError when it names a
    temporary file or none, None when it is no OS error (a library's own bug, a bad value)."""
    if isinstance(exc, OSError):
        if exc.filename is None:
            return OSError(exc.errno, exc.strerror or str(exc), str(final_path(path)))
        name, name2 = final_path(exc.filename), exc.filename2
        if str(name) == str(exc.filename):
            return exc
        if name2 is not None and str(final_path(name2)) == str(name):
            name2 = None  # the rename of a temporary file onto its target: one name
        return OSError(exc.errno, exc.strerror or str(exc), str(name), name2)
    code = _errno_of(exc)
    if code is None:
        return None
    return OSError(code, os.strerror(code), str(final_path(path)))


def _raise_named(exc: BaseException, path: str | Path) -> None:
    """Raise :func:`write_error`'s OSError for ``exc`` if it differs from ``exc``."""
    named = write_error(exc, path)
    if named is not None and named is not exc:
        raise named from exc


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def remove_stale(target: str | Path) -> list[Path]:
    """Remove the temporary files and folders of ``target`` (its hidden siblings
    ``.<name>.tmp-<pid>…`` / ``.<name>.old-<pid>-<hex>``) whose writer is gone: a run killed
    with ``kill -9``. A live pid's are kept, and so is any name this module did not make.
    Returns what was removed."""
    target = Path(target)
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return []
    removed = []
    for sibling in siblings:
        match = _TEMP_PART.match(sibling.name)
        if match is None or match.group("name") != target.name:
            continue
        if _alive(int(match.group("pid"))):
            continue
        try:
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling)
            else:
                sibling.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: the write itself decides
            continue
        removed.append(sibling)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it is fsynced and renamed to
    ``path``. The folder is created if missing; a killed writer's temporary file of ``path`` is
    removed. The temporary name does not keep ``path``'s suffix: writers that infer a format
    from the name must be told it (``format="png"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except Exception as exc:
        _raise_named(exc, path)
        raise
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


def _newest_file(folder: Path) -> Path | None:
    """The file under ``folder`` written last (the one a failed library writer was at)."""
    newest: tuple[int, str] | None = None
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                stamp = (os.stat(path).st_mtime_ns, path)
            except OSError:
                continue
            newest = stamp if newest is None or stamp > newest else newest
    return None if newest is None else Path(newest[1])


def _file_argument(exc: BaseException) -> Path | None:
    """The file name the innermost writer in ``exc``'s traceback was given (its ``filename`` or
    ``filepath`` argument: ``safetensors.torch.save_file(tensors, filename)``, which removes
    its partial file on failure), if any."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        for key in ("filename", "filepath"):
            value = tb.tb_frame.f_locals.get(key)
            if isinstance(value, (str, os.PathLike)):
                found = Path(value)
        tb = tb.tb_next
    return found


def _dir_write_error(exc: BaseException, tmp: Path) -> OSError | None:
    """:func:`write_error` for an error inside :func:`replace_dir`'s folder ``tmp``: one that
    names no file (a library writing files itself, e.g. ``save_pretrained``) names the file it
    was writing — the file argument in its traceback, else the newest file in ``tmp`` — if its
    errno is a write failure."""
    if not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError) and exc.filename is not None:
        return write_error(exc, exc.filename)
    if _errno_of(exc) not in WRITE_ERRNOS:
        return None
    written = _file_argument(exc)
    if written is None or tmp not in written.parents:
        written = _newest_file(tmp) or tmp
    return write_error(exc, written)


@contextmanager
def replace_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds.

    A killed run's temporary folders of ``target`` are removed first; a write error inside the
    block names the file under ``target`` (not the temporary folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        named = _dir_write_error(exc, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if named is not None and named is not exc:
            raise named from exc
        raise
    old = target.parent / f".{target.name}.old-{token}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
