"""Gunicorn settings for the model server; each comes from an environment variable.

Every variable is read and checked once, by ``app.config.Config``: nonsense
stops the start with one line naming the variable, before anything is created.
"""

import atexit
import gc
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from functools import partial

# Metrics from every worker meet in one directory (prometheus_client's
# multiprocess mode); it must be set before anything imports the client.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _metrics_dir = tempfile.mkdtemp(prefix="model-server-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _owner = os.getpid()
    # Ours alone: removed when the master exits, after a failed start too.
    atexit.register(lambda: os.getpid() == _owner and shutil.rmtree(_metrics_dir, True))

from app.config import Config, ConfigError  # noqa: E402

try:
    _settings = Config()
except ConfigError as error:
    sys.exit(f"model server: configuration error: {error}")

from app.ops import connections, handover, metrics_files, repository_poll  # noqa: E402

if "app.extensions" not in sys.modules:
    # At the first start only (a reload runs this file again), and before the
    # app's metrics create this process's own files: drop an earlier server's counts.
    metrics_files.reset(os.environ["PROMETHEUS_MULTIPROC_DIR"])

from app.ops import gunicorn_caches, gunicorn_errors  # noqa: E402
from app.ops.logs import ACCESS_FORMAT, AccessLogger, logging_config  # noqa: E402
from app.serve import in_use  # noqa: E402

# Errors Gunicorn answers itself (bad request line, oversized headers, a
# request cut off at the timeout) use the API's JSON shape, not HTML.
gunicorn_errors.install()
# The Date header, the client's address check and wsgi.errors: made once, not per request.
gunicorn_caches.install()

# Loopback unless told otherwise; containers set HOST=0.0.0.0.
bind = _settings.GUNICORN_BIND

# One process per core: inference is CPU-bound and each worker runs its own interpreter.
workers = _settings.WEB_CONCURRENCY

# gevent, made fair for a CPU-bound app (app/ops/worker.py): each connection is a
# greenlet, so idle, slow and kept-alive clients cost memory, never a worker.
# sync and gthread are there to compare (README, "Slow and idle clients"): two
# idle connections stall two sync workers.
WORKER_CLASSES = {
    "gevent": "app.ops.worker.ModelServerWorker",
    "sync": "sync",
    "gthread": "gthread",
}
worker_class = WORKER_CLASSES[_settings.GUNICORN_WORKER_CLASS]
threads = _settings.GUNICORN_THREADS

# Per worker: past this many open connections it stops accepting until one closes.
worker_connections = _settings.GUNICORN_WORKER_CONNECTIONS

# Keep-alive: an idle connection is closed after this many seconds. Under
# gevent the same bound applies to every request's line and headers, counted
# from the connection's opening or the previous answer.
keepalive = _settings.GUNICORN_KEEPALIVE

# Import the app once in the master so the workers share its pages. The
# master also holds the verified model (bytes, no runtime) that workers serve.
preload_app = True

# A request still running after this many seconds is cut off and its worker replaced.
timeout = _settings.GUNICORN_TIMEOUT

# On SIGTERM or reload, in-flight requests get this long to finish.
graceful_timeout = _settings.GUNICORN_GRACEFUL_TIMEOUT

# Reload with SIGHUP to this pid (make reload); the control socket is not needed.
pidfile = str(_settings.GUNICORN_PIDFILE) if _settings.GUNICORN_PIDFILE else None
control_socket_disable = True

# One JSON object per line on stdout (LOG_FORMAT=text for humans), from the
# app and from Gunicorn's access and error logs alike.
accesslog = "-"
errorlog = "-"
loglevel = _settings.LOG_LEVEL.lower()
logconfig_dict = logging_config(_settings.LOG_LEVEL, _settings.LOG_FORMAT)
access_log_format = ACCESS_FORMAT
# Builds only the atoms that format and the JSON fields use, not Gunicorn's ~50.
logger_class = AccessLogger


def on_starting(server):
    """Load the model, or refuse to start with one line saying why."""
    from app.core import control, rollouts
    from app.core.serving import load_models
    from app.runtime.model import ModelLoadError

    if _settings.GRPC_PORT and in_use(_settings.GRPC_BIND):
        # Workers share the port with SO_REUSEPORT, which would also let them
        # share it with another server: never, so it must be free at start.
        server.log.error(
            "GRPC_PORT %s is in use (%s): set GRPC_PORT, or PORT (gRPC takes PORT+81)",
            _settings.GRPC_PORT,
            _settings.GRPC_BIND,
        )
        sys.exit(1)
    app = server.app.wsgi()
    control.note_repository(app)
    try:
        with control.master_lock(app):
            load_models(app, control.load_names(app))
            control.publish(app)
        rollouts.cleared(app)
    except ModelLoadError as error:
        # One line naming the path and the cause; no worker is ever forked.
        server.log.error("no servable model: %s", error)
        sys.exit(1)


def when_ready(server):
    """Say where the server answers; with MODEL_POLL_SECONDS, start the process that polls
    the repository for changes."""
    from app.core import control

    grpc = f"gRPC on {_settings.GRPC_BIND}" if _settings.GRPC_PORT else "no gRPC (GRPC_PORT=0)"
    server.log.info(
        "serving HTTP on %s, %s; pid file %s",
        _settings.GUNICORN_BIND,
        grpc,
        _settings.GUNICORN_PIDFILE or "none (GUNICORN_PIDFILE)",
    )

    if _settings.MODEL_POLL_SECONDS:
        app = server.app.wsgi()
        poll = partial(control.poll_repository, app)
        pid = repository_poll.start(server, _settings.MODEL_POLL_SECONDS, poll)
        server.log.info(
            "polling the model repository every %s s (pid %s)", _settings.MODEL_POLL_SECONDS, pid
        )


def on_reload(server):
    """Load the newest version before any worker is replaced; keep the old one if it fails.

    Gunicorn calls this before it forks the new workers and stops the old
    ones, so the old workers serve on while the new version loads, and the
    new workers start with it already verified: no gap, however slow the load.
    """
    from app.core import control, rollouts
    from app.core.serving import load_models, serving_state
    from app.runtime.model import ModelLoadError

    app = server.app.wsgi()
    handover.replacing(server.worker_age)
    # pre_fork froze every object before the last fork; unfrozen, what the
    # previous reload left behind can be collected (else ~70 kB a reload stays).
    gc.unfreeze()
    control.note_repository(app)
    with control.master_lock(app):
        try:
            load_models(app, control.load_names(app))
        except ModelLoadError as error:
            bundles = list(serving_state(app).bundles.values())
            kept = (
                f"version {bundles[0].version.number}"
                if len(bundles) == 1
                else f"their {len(bundles)} models"
            )
            server.log.error("reload failed, workers keep serving %s: %s", kept, error)
        else:
            control.publish(app)
            rollouts.cleared(app)
    gc.collect()


def pre_fork(server, worker):
    """Keep the preloaded app's objects out of the garbage collector's sight.

    A full collection in a worker writes to every object it traverses, which
    copies each page it shares with the master: measured here, 45 MiB more
    PSS per worker after a few seconds of load. Frozen objects are skipped.
    """
    gc.freeze()


def post_fork(server, worker):
    """Hold SIGTERM until the worker can drain (``post_worker_init`` releases it).

    Until a worker sets its own handlers, a SIGTERM reaches the master's
    handler, copied by the fork, and is lost: a stop sent while a worker
    boots then waited out the whole graceful timeout (3 of 8 tries). Held,
    it waits in the kernel and is delivered to the drain handler.

    Then the worker's settings become plain attributes (app/ops/gunicorn_caches.py).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    gunicorn_caches.settle(worker.cfg)


def post_worker_init(worker):
    """Take the master's runtime (or build one from its verified model), serve gRPC
    beside HTTP, and on SIGTERM drain both, then stop.

    The runtime is built here, before the worker serves and once gevent has
    patched it: TensorFlow's runtime, imported earlier, would have imported
    ssl before the patch. A worker a reload replaces serves on until a newer
    one serves (app/ops/handover.py). On SIGTERM the worker answers 503 on /health/ready
    (NOT_SERVING and ready false over gRPC) and keeps serving DRAIN_SECONDS,
    so a load balancer sees it leave before it stops accepting; in-flight
    requests and calls then get Gunicorn's graceful timeout.
    """
    from app.core import control
    from app.core.serving import serving_state, start_serving

    start_serving(worker.wsgi)
    state = serving_state(worker.wsgi)
    if hasattr(worker, "adopt"):  # app/ops/worker.py's gevent worker: its turns, deadlines, timers
        worker.adopt(state)
        call_later = worker.call_later
        if control.explicit(worker.wsgi):
            keep_up(worker.wsgi, call_later)
    else:
        call_later = in_thread_later
    worker.grpc_server = None
    if _settings.GRPC_PORT:
        # Imported here, in the worker: gRPC never starts in the master before a fork.
        from app.grpc.server import GrpcServer

        worker.grpc_server = GrpcServer(worker.wsgi, _settings.GRPC_BIND, call_later)
        worker.grpc_server.start()
    handover.announce(worker.age)
    # How long a worker a reload replaces serves on, waiting for a newer one to serve.
    handover_deadline = _settings.GUNICORN_GRACEFUL_TIMEOUT / 2

    def stop():
        worker.alive = False
        os.write(worker.PIPE[1], b"1")  # Wake the worker from its wait for connections.

    signalled = False

    def drain(signum, frame):
        nonlocal signalled
        if signalled:  # The master repeats SIGTERM while it waits.
            return
        signalled = True
        if handover.is_replaced(worker.age):
            hand_over(time.monotonic() + handover_deadline)
        else:
            begin_draining()

    def hand_over(deadline):
        """Serve on until a newer worker serves (or the deadline passes), then drain."""
        if handover.newer_serves(worker.age) or time.monotonic() >= deadline:
            begin_draining()
        else:
            call_later(0.05, lambda: hand_over(deadline))

    def begin_draining():
        state.draining = True
        if hasattr(worker, "share"):  # Siblings no longer leave connections to this one.
            worker.share.leave()
        if worker.grpc_server:
            worker.grpc_server.drain()
        call_later(_settings.DRAIN_SECONDS, stop)

    signal.signal(signal.SIGTERM, drain)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # Held since post_fork.


def in_thread_later(seconds: float, function) -> None:
    """Call ``function`` in ``seconds`` on a daemon thread (the sync and gthread workers):
    a timer pending at exit never keeps a stopped worker alive."""
    timer = threading.Timer(seconds, function)
    timer.daemon = True
    timer.start()


def keep_up(app, call_later):
    """Take up the loads and unloads answered since the master's set, now and while idle.

    Every request does so first anyway (app/core/control.py); this spares the
    first one after a load the time, and an idle worker the memory.
    """
    from app.core import control

    def poll():
        with app.app_context():
            control.catch_up(app)
        call_later(control.IDLE_POLL_SECONDS, poll)

    poll()


def worker_exit(server, worker):
    """Stop gRPC once a newer worker serves it, and let the calls in flight finish.

    See app/ops/handover.py: in a reload the old worker's gRPC server must not
    stop before a new one listens, or clients are refused meanwhile.
    """
    if getattr(worker, "grpc_server", None):
        if handover.is_replaced(worker.age):  # A stop replaces no worker: nothing to wait for.
            handover.wait_for_newer(worker.age)
        worker.grpc_server.close(_settings.GUNICORN_GRACEFUL_TIMEOUT)


def pre_request(worker, req):
    """While a worker drains, close each connection after its answer.

    Kept-alive clients then reconnect, and reach an instance that is not leaving.
    """
    if worker.wsgi.extensions["serving"].draining:  # app.core.serving's state, per request.
        req.must_close = True


def child_exit(server, worker):
    """Fold a dead worker's metrics into the totals and drop its files; stop counting its
    connections."""
    metrics_files.retire(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)
    connections.forget(worker.age)
