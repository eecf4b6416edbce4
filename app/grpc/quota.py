"""A worker's gRPC memory quota: the bytes its calls may hold at once.

grpcio's Python server has no memory quota of its own: a client that sends
calls and never reads the answers (never grants HTTP/2 window) had every
answer kept in the worker, 1.2 GiB from one connection. Here each call
reserves room for the largest message or answer a call may have before its
message is read, keeps room for its answer once built, and gives it back when
the call ends (its answer sent, or the client gone). One connection may
hold at most half the quota, so a client that never reads cannot starve the
others. A call that finds no room waits briefly for it, then is refused with
RESOURCE_EXHAUSTED, before a byte of its message is read.
"""

import threading
import time
from collections import Counter

# HTTP/2 streams one connection may have open at once.
STREAMS_PER_CONNECTION = 16
# A message or answer is held about twice (measured: 16 unread 1 MB answers
# grew a worker by 38 MiB): gRPC's buffer and Python's bytes.
COPIES = 2
# The quota holds at least this many bytes, and at least eight of the largest calls.
MIN_QUOTA_BYTES = 64 * 1024 * 1024
# How long a call waits for room before it is refused.
WAIT_SECONDS = 2.0


def quota_bytes(largest_call: int) -> int:
    """The quota for calls of at most ``largest_call`` bytes (message or answer)."""
    return max(MIN_QUOTA_BYTES, 8 * COPIES * largest_call)


class MemoryQuota:
    """Bytes held by calls in progress: at most ``limit``, half of it per connection."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._by_connection = Counter()
        self._changed = threading.Condition()

    def reserve(self, connection: str, size: int, wait: float = WAIT_SECONDS):
        """A ``Reservation`` of ``size`` message bytes for a call on ``connection``, or None
        when there is no room within ``wait`` seconds."""
        held = COPIES * size
        deadline = time.monotonic() + wait
        with self._changed:
            while not self._fits(connection, held):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            self._change(connection, held)
        return Reservation(self, connection, held)

    def _fits(self, connection: str, held: int) -> bool:
        return (
            self.used + held <= self.limit
            and self._by_connection[connection] + held <= self.limit // 2
        )

    def _change(self, connection: str, change: int) -> None:
        self.used += change
        self._by_connection[connection] += change
        if self._by_connection[connection] <= 0:
            del self._by_connection[connection]

    def _adjust(self, connection: str, change: int) -> None:
        with self._changed:
            self._change(connection, change)
            self._changed.notify_all()


class Reservation:
    """Room held by one call: ``resize`` it to what the call holds, ``release`` it at the end."""

    def __init__(self, quota: MemoryQuota, connection: str, held: int):
        self._quota, self._connection, self.held = quota, connection, held
        self._released = False

    def resize(self, size: int) -> None:
        """Hold room for ``size`` bytes (an answer built, no larger than reserved) instead."""
        if self._released:  # The call ended first (its client left); nothing is held.
            return
        held = COPIES * size
        self._quota._adjust(self._connection, held - self.held)
        self.held = held

    def release(self) -> None:
        self.resize(0)
        self._released = True
