"""File writing that never leaves a half-written file behind.

Forge renames a LoRA it fails to load to `*.corrupted`, and a crash mid-write would leave exactly
such a file: everything we write goes to a temporary name in the same folder and is then moved into
place with `os.replace`, which is atomic on POSIX and Windows. The temporary file gets the mode a
plain `open()` would give (0666 minus the umask), not `mkstemp`'s private 0600: a WebUI running as
another user must be able to read the LoRA files, images and configs we write.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class OutputError(OSError):
    """An output could not be written (disk full, read-only folder, ...); names the path."""


_UMASK_LOCK = threading.Lock()
_PROC_STATUS = "/proc/self/status"  # Linux: holds "Umask:\t0022"


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux's /proc); elsewhere
    `os.umask` is set and restored at once, under a lock so that two of our threads never race on it."""
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits `open(path, "w")` gives a new file: 0666 minus the umask (0644 usually)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success move it onto `target`."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(e.errno, f"cannot write into {target.parent}: {e.strerror}") from e
    # mkstemp makes the file 0600, readable by us alone. A folder that refuses chmod (some network
    # or FUSE mounts) has its own idea of permissions: write anyway.
    with contextlib.suppress(OSError):
        os.chmod(tmp, new_file_mode())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        raise OutputError(e.errno, f"cannot write {target}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `target` for writing; it replaces `target` when closed cleanly."""
    if "b" in mode:
        encoding = None
    with atomic_path(target) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_open(target, "w") as f:
        f.write(text)


def write_json_atomic(target: str | os.PathLike, data: Any) -> None:
    with atomic_open(target, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def png_beside(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`<out_dir>/<source stem>.png`, refusing the one case that would overwrite the source itself."""
    source = Path(source)
    target = Path(out_dir) / f"{source.stem}.png"
    if target.resolve() == source.resolve():
        raise ValueError(f"{source}: the output would overwrite the input; choose another folder")
    return target
