"""One writer per run folder: an exclusive lock held for the whole of a training run.

The lock is `fcntl.flock` on a small file beside the run folder, `.<name>.lock` in its
parent, holding the owner's process id. Beside, not inside: the run folder stays
byte-identical when a run is refused, and `--new` can move the folder aside while the lock
stays on its name. The kernel drops the lock when its owner dies, so a killed run never
leaves a stale lock; the owner removes the file when it ends (a file left by a killed run
is reused by the next one).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ganforge.errors import GanforgeError


def lock_path(run_dir: Path) -> Path:
    """The lock file of a run folder: `.<name>.lock` beside it."""
    run_dir = run_dir.absolute()
    return run_dir.parent / f".{run_dir.name or 'root'}.lock"


@contextmanager
def hold(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Holds the lock of `run_dir` for the body; another holder is a GanforgeError naming its process id.

    Folders it has to create for the lock file are removed again if still empty at the end,
    so a refused run leaves nothing behind. With `enabled` False it does nothing (the other
    processes of a torchrun job, whose main process holds the lock).
    """
    if not enabled:
        yield
        return
    path = lock_path(run_dir)
    created = _make_parents(path.parent)
    try:
        fd, owned = _acquire(path, run_dir)
        try:
            yield
        finally:
            if owned:
                path.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish
            os.close(fd)
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run wrote into it


def _make_parents(folder: Path) -> list[Path]:
    """Creates `folder` and its missing parents; returns the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _acquire(path: Path, run_dir: Path) -> tuple[int, bool]:
    """Locks `path` (created if absent) and writes this process's id into it; returns its descriptor and True.

    Where the parent folder cannot be written (a run folder on a mount whose parent belongs
    to someone else), the run folder itself is locked instead: descriptor and False.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not run_dir.is_dir():
                raise
            return _lock(os.open(run_dir, os.O_RDONLY), run_dir), False
        _lock(fd, run_dir)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its previous owner removed it as we opened it: lock the file now under that name
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd, True


def _lock(fd: int, run_dir: Path) -> int:
    """Takes the exclusive lock on `fd` without waiting, or closes it and raises the error naming the holder."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
        except IsADirectoryError:
            holder = ""
        os.close(fd)
        pid = f"process id {holder}" if holder.isdigit() else "another process"
        raise GanforgeError(f"out='{run_dir}' is in use by another ganforge run ({pid}): wait for it to end, or choose another --out") from None
    return fd
