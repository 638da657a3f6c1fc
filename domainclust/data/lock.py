"""An exclusive lock on a store being written, so that two writers never interleave commits.

The lock is a file beside the store (`<store>.lock`) holding the holder's pid, host and start
time, locked with `flock`. The kernel drops an `flock` when its process dies, however it dies,
so a lock left behind by a crash is stale by construction: the next writer takes it over
without anyone deleting files. Readers never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from domainclust.errors import DomainclustError

SUFFIX = ".lock"


def lock_path(store: Path) -> Path:
    return store.parent / (store.name + SUFFIX)


class StoreLock:
    """Held from `acquire` until `release` (or the end of the process)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = lock_path(store)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or refuse, naming the process that holds it."""
        if self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise DomainclustError(
                    f"{self.store} is being written by another process ({holder}); "
                    "wait for it to finish, or write to another --out"
                ) from None
            # The file may have been unlinked by a holder that finished between our open and
            # our flock: a lock on a file no longer at the path guards nothing, so start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def __del__(self) -> None:
        # A writer dropped without `finish` or `close` lets go as a crashed process would.
        if self._fd is not None:
            os.close(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: nobody can be inside
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {started}"
