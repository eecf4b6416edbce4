"""Open connections per worker, shared by the master and its workers: a burst is shared out.

Every gevent worker waits on the master's one listening socket. When
keep-alive connections arrive in a burst while the CPU is busy, the worker
that happens to run accepts them all and holds them for their whole life: in
2 of 8 runs one worker served all 16 of a client's connections, at half the
throughput. So a worker that holds more connections than its least loaded
sibling (plus ``SLACK``) leaves the next one in the backlog for a moment
(``DEFER_SECONDS``), as nginx's ``accept_disabled`` does; past
``DEFER_LIMIT_SECONDS`` without a sibling taking it, it accepts anyway, so a
stuck sibling never leaves a connection waiting long. The socket stays the
master's: a reload's hand-over and a drain lose no queued connection, which
per-worker ``SO_REUSEPORT`` listeners would (a closing listener resets its
backlog). Created at import, in the master, before any fork.

A worker's count includes connections whose close it has not yet read. A
client that closes its connections and opens new ones at once, while a
worker waits for a CPU, finds that worker still counting the old ones, and
its sibling takes that many more of the new (bursts back to back, both cores
busy: 14 or 15 of 16 in 2 of 200 bursts here, all 16 once in CI).
"""

import multiprocessing
import time

# Worker slots, by Gunicorn's spawn counter (age) modulo this: far more than live at once.
SLOTS = 64
# How many more connections than its least loaded sibling a worker accepts.
SLACK = 1
# How long a worker ahead leaves the backlog to its siblings before it looks again.
DEFER_SECONDS = 0.002
# How long, at most, before it accepts anyway.
DEFER_LIMIT_SECONDS = 0.1

_counts = multiprocessing.RawArray("q", SLOTS)
_pids = multiprocessing.RawArray("q", SLOTS)


class Share:
    """One worker's entry: its open connections, and whether it is ahead of its siblings."""

    def __init__(self, age: int, pid: int):
        self.slot = age % SLOTS
        _counts[self.slot], _pids[self.slot] = 0, pid
        self.deferring_since = None

    def opened(self) -> None:
        _counts[self.slot] += 1  # Each slot is written by its worker only.

    def closed(self) -> None:
        _counts[self.slot] -= 1

    def leave(self) -> None:
        """Stop taking part (the worker drains): siblings no longer wait on it."""
        _pids[self.slot] = 0

    def ahead(self) -> bool:
        """Whether to leave the next connection to a sibling for now."""
        mine, slot = _counts[self.slot], self.slot
        others = [_counts[i] for i in range(SLOTS) if _pids[i] and i != slot]
        if not others or mine <= min(others) + SLACK:
            self.deferring_since = None
            return False
        now = time.monotonic()
        if self.deferring_since is None:
            self.deferring_since = now
        if now - self.deferring_since >= DEFER_LIMIT_SECONDS:
            self.deferring_since = None
            return False
        return True


def forget(age: int) -> None:
    """In the master, when a worker exits: siblings no longer count it."""
    _pids[age % SLOTS] = 0
    _counts[age % SLOTS] = 0
