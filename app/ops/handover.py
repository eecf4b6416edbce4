"""Which generation of workers serves: numbers shared by the master and its workers.

Gunicorn stops a reload's old workers as soon as it has forked the new ones,
before those serve. For HTTP the master holds the socket, so clients would
wait in its backlog while the new workers build their runtime (5 s for
TensorFlow's); for gRPC each worker binds the port itself, so clients would
be refused. So a worker that a reload replaces keeps serving, HTTP and gRPC,
until a newer worker announces that it serves, or a timeout passes; a
shutdown replaces no worker, and its workers drain at once. Created at
import, in the master, before any fork; the module outlives Gunicorn's
reloads of its configuration.
"""

import multiprocessing
import time

# The age (Gunicorn's spawn counter) of the newest worker that serves.
_newest = multiprocessing.RawValue("q", 0)
# Workers up to this age are being replaced by a reload.
_replaced = multiprocessing.RawValue("q", 0)

GRPC_HANDOVER_SECONDS = 1.0


def replacing(age: int) -> None:
    """In the master, at a reload: the workers up to ``age`` are to be replaced."""
    _replaced.value = age


def is_replaced(age: int) -> bool:
    """Whether a reload replaces the worker of ``age`` (else it is shut down)."""
    return age <= _replaced.value


def newer_serves(age: int) -> bool:
    """Whether a worker newer than ``age``, and than every worker a reload replaces, has
    announced that it serves."""
    return _newest.value > max(age, _replaced.value)


def announce(age: int) -> None:
    """Say that the worker of ``age`` serves HTTP and, when enabled, gRPC."""
    if age > _newest.value:
        _newest.value = age


def wait_for_newer(age: int, timeout: float = GRPC_HANDOVER_SECONDS) -> bool:
    """Wait until a worker newer than ``age`` listens, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not newer_serves(age):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
