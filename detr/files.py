"""Atomic file writes, for the engine and for the shared volume alike (no torch here: the gateway writes too).

A file is written under a temporary name beside its destination, flushed to disk and renamed
over it, so a reader (another container on the shared volume) never sees half a file and a failed
write leaves the previous version in place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional

#: Permissions of the files we write (before the umask): mkstemp's 0600 would hide them from the
#: function containers that share the volume under other users.
FILE_MODE = 0o644
#: The errors a full disk (or an exhausted quota) gives.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

FailureHook = Callable[[BaseException, int], Optional[BaseException]]
"""Called with a failed write's error and the bytes written before it; returns the error to raise
instead, or None to raise the original."""


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True,
                 on_failure: FailureHook | None = None) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it over ``path``.

    On failure the temporary file is removed and the error is raised as it is, or as ``on_failure``
    describes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), FILE_MODE)
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = os.stat(tmp).st_size if os.path.exists(tmp) else 0
        Path(tmp).unlink(missing_ok=True)
        replacement = on_failure(e, written) if on_failure is not None else None
        if replacement is not None:
            raise replacement from e
        raise


def dump_json(data: Any, out: IO[str]) -> None:
    """The one JSON form of our files: indented, UTF-8 as is, a final newline."""
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """``data`` as JSON in ``path``, atomically; a failed write raises its ``OSError``."""
    write_atomic(path, lambda out: dump_json(data, out), binary=False)


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """A copy of ``src`` at ``dest``, atomically; a failed write raises its ``OSError``."""
    with open(src, "rb") as source:
        write_atomic(dest, lambda out: shutil.copyfileobj(source, out))
