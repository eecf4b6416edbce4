"""The multiprocess metrics directory: bounded in files, exact in totals.

prometheus_client gives each worker its own counter and histogram files, and
they outlive the worker: after a few hundred reloads ``/metrics`` read
hundreds of files. When a worker dies, the master folds its counts into one
``*_retired.db`` file per type and removes its files, under an exclusive lock
that ``/metrics`` takes shared, so a scrape never sees a count twice or not at all.
"""

import fcntl
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict

# Types whose values are summed over processes; live gauges go with their process.
SUMMED_TYPES = ("counter", "histogram")
LOCK_FILE = ".lock"


@contextmanager
def locked(directory, exclusive: bool):
    with open(Path(directory) / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reset(directory) -> None:
    """Create the directory, or empty it of an earlier server's metric files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def retire(directory, pid: int) -> None:
    """Fold a dead process's counters and histograms into the retired totals; drop its files."""
    multiprocess.mark_process_dead(pid, str(directory))
    directory = Path(directory)
    with locked(directory, exclusive=True):
        for kind in SUMMED_TYPES:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            retired = MmapedDict(str(directory / f"{kind}_retired.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                    total, _ = retired.read_value(key)
                    retired.write_value(key, total + value, timestamp)
            finally:
                retired.close()
            dead.unlink()


def registry(directory) -> CollectorRegistry:
    """A registry that collects every process's metrics from ``directory``."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(directory))
    return registry
