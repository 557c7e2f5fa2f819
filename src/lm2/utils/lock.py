"""An exclusive lock on a folder that one process at a time may write (a training run, a study).

The lock is ``flock`` on ``FOLDER/.lock``: the kernel drops it when its holder exits however it ends (a
kill, a crash, a lost terminal), so a lock left by a dead process is free for the next one without any
clean-up. The file stays empty (taking the lock writes nothing in the folder); the holder named in the
message a second writer gets is read from the kernel's table of locks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


class FolderBusy(ValueError):
    """Another live process holds the folder's lock; the message names it and the way out."""


class FolderLock:
    """``with FolderLock(folder):``, or ``acquire()`` and ``release()``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.fstat(fd).st_ino)
            os.close(fd)
            raise FolderBusy(
                f"{self.folder} is being written by {holder}; wait for it to finish (or stop it), or give "
                "another --out"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(inode: int) -> str:
    """Who holds the flock on the file with ``inode``: "process PID (COMMAND)", from /proc/locks (Linux)."""
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in table:
        fields = line.split()  # id: FLOCK ADVISORY WRITE pid major:minor:inode start end
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command[:120]})" if command else "")
    return "another process"
