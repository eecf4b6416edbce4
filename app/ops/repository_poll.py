"""MODEL_POLL_SECONDS: one process, forked by the Gunicorn master once it is ready, looks at
the repository every interval and asks the master for a reload when it changed.

In a process of its own, a file system that hangs or a bucket slow to list
never stalls a worker's event loop, and a bucket is listed once an interval
rather than once per worker. It dies with the master (the kernel sends it
SIGTERM when the master exits) and holds none of its sockets.
"""

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# The signals Gunicorn's master handles; the poll's process takes the defaults back.
MASTER_SIGNALS = [
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
]
# prctl(2): the signal this process gets when its parent exits (Linux).
PR_SET_PDEATHSIG = 1


def start(server, seconds: float, poll: Callable[[int], None]) -> int:
    """Fork the poll's process from the master (``server``, Gunicorn's arbiter), which
    calls ``poll(master_pid)`` every ``seconds`` while the master lives; its pid."""
    master = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        for signum in MASTER_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        for listener in server.LISTENERS:
            listener.close()
        while os.getppid() == master:  # The master may have exited before the prctl.
            time.sleep(seconds)
            poll(master)
    except Exception:  # noqa: BLE001 - said, not silently lost.
        log.exception("the repository poll stopped")
    finally:
        os._exit(0)
