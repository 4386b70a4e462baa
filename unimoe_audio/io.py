"""Atomic file writes: outputs and checkpoints never exist half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from unimoe_audio.errors import UniMoEError

# Failures of writing itself (no permission, read-only or full disk): the user's to fix, so one line.
WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR, errno.EEXIST,
                errno.EISDIR}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same directory so the final `os.replace` is atomic; on any
    error it is removed and whatever was at `path` stays intact. An unwritable folder or a full
    disk raises `UniMoEError` naming `path`.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        raise UniMoEError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_figure(fig, out: str | os.PathLike | BinaryIO, dpi: int = 110) -> str | os.PathLike | BinaryIO:
    """Save a matplotlib figure as a PNG (laid out tightly) to a path, atomically, or to a binary
    file, and close it. Returns `out`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if isinstance(out, (str, os.PathLike)):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    else:
        fig.savefig(out, format="png", dpi=dpi)
    plt.close(fig)
    return out


def read_json(path: str | os.PathLike, what: str) -> Any | None:
    """A JSON file that the project rebuilds when it is damaged (`what` says what rebuilding means):
    None, with a warning on stderr, when it is not valid JSON; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        print(f"warning: {path} is corrupt ({err}); {what}", file=sys.stderr)
        return None


def read_config(directory: str | os.PathLike, what: str = "model", name: str = "config.json") -> dict:
    """`<directory>/<name>` of a saved model or codec; missing or not JSON -> UniMoEError."""
    path = Path(directory) / name
    if not path.is_file():
        raise UniMoEError(f"no {what} at {directory}: {name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UniMoEError(f"{path} is not valid JSON: {err}") from None
