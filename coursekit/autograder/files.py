"""Writing the autograder's files so that nothing is ever half-written, and one run at a time.

Every report, the manifest and every feedback page is written to a temporary file in the same folder and
then renamed over the old one: a reader (or a run killed halfway) sees the old file or the new one, never a
mix. :class:`RunLock` keeps two ``coursekit grade`` runs of one assignment (two teaching assistants) from
interleaving their writes: the second waits for the first, and says so.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import sys
import tempfile
import time
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (flushed to disk first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would have made it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder_files(source: Path, target: Path) -> None:
    """Move every file of ``source`` into ``target`` by rename (each one atomic), then drop files ``target``
    had that ``source`` does not. Both folders must be on one file system."""
    target.mkdir(parents=True, exist_ok=True)
    names = set()
    for path in sorted(source.rglob("*")):
        if path.is_file():
            relative = path.relative_to(source)
            names.add(relative)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target / relative)
    for path in sorted(target.rglob("*")):
        if path.is_file() and path.relative_to(target) not in names:
            path.unlink()


class RunLock:
    """An exclusive lock on ``path`` (``flock``) for the length of a ``with`` block; waits while another holds it.

    The holder writes who it is into the file, so the one waiting can say whom it waits for. The kernel
    releases the lock when the holder exits, however it exits.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "another process"
            print(f"Waiting: {self.what} is already running ({holder}); this run starts when it ends.",
                  file=sys.stderr, flush=True)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} of {_user()} on {socket.gethostname()}, since "
                            f"{time.strftime('%H:%M:%S')}\n".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
