"""The multiprocess metrics directory: bounded in files, exact in totals.

prometheus_client gives each worker its own counter, histogram and max-gauge
files, and they outlive the worker: after a few hundred reloads ``/metrics`` read
hundreds of files. When a worker dies, the master folds its counts into one
``*_retired.db`` file per type and removes its files, under an exclusive lock
that ``/metrics`` takes shared, so a scrape never sees a count twice or not at all.
"""

import fcntl
import re
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict

# Types whose values outlive their process, and how a dead one's fold into the retired
# total: counters and histograms add up, a "max" gauge (a last-seen time) keeps the larger.
# Live gauges go with their process.
FOLDED_TYPES = {"counter": float.__add__, "histogram": float.__add__, "gauge_max": max}
LOCK_FILE = ".lock"
# A live gauge's file names its process: gauge_livesum_1234.db.
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


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
    """Fold a dead process's counters, histograms and max gauges into the retired totals;
    drop its files."""
    multiprocess.mark_process_dead(pid, str(directory))
    directory = Path(directory)
    with locked(directory, exclusive=True):
        for kind, fold in FOLDED_TYPES.items():
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            retired = MmapedDict(str(directory / f"{kind}_retired.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                    total, _ = retired.read_value(key)
                    retired.write_value(key, fold(float(total), float(value)), timestamp)
            finally:
                retired.close()
            dead.unlink()


def registry(directory) -> CollectorRegistry:
    """A registry that collects every process's metrics from ``directory``."""
    registry = CollectorRegistry()
    LiveCollector(registry, str(directory))
    return registry


class LiveCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector, leaving out the live gauges of processes that are gone.

    The master removes a dead worker's files once it has reaped it; a scrape
    between the worker's death and that (a SIGKILL, the master busy) counted
    its requests in flight as still running.
    """

    def collect(self):
        files = [
            str(path)
            for path in Path(self._path).glob("*.db")
            if not (match := LIVE_GAUGE_FILE.fullmatch(path.name)) or alive(int(match[1]))
        ]
        return self.merge(files, accumulate=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"
