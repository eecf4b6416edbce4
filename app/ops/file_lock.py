"""An exclusive lock between processes, on a file, that never stops a worker's event loop."""

import fcntl
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

# How often a waiting process tries the lock again.
POLL_SECONDS = 0.05


@contextmanager
def file_locked(path: Path, timeout: float | None, busy: Callable[[], Exception]):
    """Hold the lock on ``path``. A worker polls for it (a blocking wait would stop its event
    loop) and raises ``busy()`` once ``timeout`` passes; with no timeout (the master) it waits
    as long as it takes."""
    with path.open("w") as file:
        if timeout is None:
            fcntl.flock(file, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise busy() from None
                    time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
