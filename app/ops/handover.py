"""Which generation of workers serves gRPC: one number shared by the master and its workers.

Gunicorn stops a reload's old workers as soon as it has forked the new ones,
before those listen. HTTP does not notice (the master holds its socket); each
worker's gRPC server binds the port itself, so an old worker keeps serving
gRPC until a newer worker announces its server, or GRPC_HANDOVER_SECONDS pass
(a shutdown has no newer worker). Created at import, in the master, before
any fork; the module outlives Gunicorn's reloads of its configuration.
"""

import multiprocessing
import time

# The age (Gunicorn's spawn counter) of the newest worker whose gRPC server listens.
_newest = multiprocessing.RawValue("q", 0)

GRPC_HANDOVER_SECONDS = 1.0


def announce(age: int) -> None:
    """Say that the worker of ``age`` listens for gRPC."""
    if age > _newest.value:
        _newest.value = age


def wait_for_newer(age: int, timeout: float = GRPC_HANDOVER_SECONDS) -> bool:
    """Wait until a worker newer than ``age`` listens, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while _newest.value <= age:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
