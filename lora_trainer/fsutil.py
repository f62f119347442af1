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
import time
from collections.abc import Callable, Iterator
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


# --- lock files ----------------------------------------------------------------------------------

class LockHeld(RuntimeError):
    """A lock file is held by a live process; `owner` is what that process wrote into it."""

    def __init__(self, path: Path, owner: dict):
        self.path, self.owner = Path(path), owner
        super().__init__(f"{path} is held by process {owner.get('pid')}")


_FRESH_LOCK_S = 10.0  # an empty lock file this young is being written by its creator


def _read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def lock_owner(path: str | os.PathLike, is_live: Callable[[dict], bool]) -> dict | None:
    """What the live process holding the lock file wrote into it; None when no live process holds it."""
    path = Path(path)
    if not path.exists():
        return None
    owner = _read_owner(path)
    if owner is None:
        try:
            young = time.time() - path.stat().st_mtime < _FRESH_LOCK_S
        except OSError:
            return None
        return {"pid": None} if young else None
    return owner if is_live(owner) else None


def acquire_lock(path: str | os.PathLike, owner: dict, is_live: Callable[[dict], bool]) -> None:
    """Create the lock file `path` holding `owner` (JSON), atomically (O_CREAT | O_EXCL): LockHeld if a
    live process holds it; one left by a process that has ended (`is_live` says no) is replaced."""
    path = Path(path)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, new_file_mode())
        except FileExistsError:
            seen = _read_owner(path)
            held = lock_owner(path, is_live)
            if held is not None:
                raise LockHeld(path, held) from None
            if _read_owner(path) == seen:  # still the stale one (no other process replaced it meanwhile)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        except OSError as e:
            raise OutputError(e.errno, f"cannot create {path}: {e.strerror}") from e
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(owner, f)
            f.flush()
            os.fsync(f.fileno())
        return
    held = lock_owner(path, is_live)
    raise LockHeld(path, held or {"pid": None})


def release_lock(path: str | os.PathLike, owner: dict) -> None:
    """Remove the lock file if it still holds `owner` (never another process's)."""
    path = Path(path)
    if _read_owner(path) == owner:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def png_beside(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`<out_dir>/<source stem>.png`, refusing the one case that would overwrite the source itself."""
    source = Path(source)
    target = Path(out_dir) / f"{source.stem}.png"
    if target.resolve() == source.resolve():
        raise ValueError(f"{source}: the output would overwrite the input; choose another folder")
    return target
