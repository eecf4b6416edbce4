"""Gunicorn settings for the model server; each has an environment override."""

import gc
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

# Metrics from every worker meet in one directory (prometheus_client's
# multiprocess mode); it must be known before the app imports the client.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="model-server-metrics-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from app import gunicorn_errors  # noqa: E402
from app.config import Config  # noqa: E402
from app.logs import ACCESS_FORMAT, logging_config  # noqa: E402

# Errors Gunicorn answers itself (bad request line, oversized headers, a
# request cut off at the timeout) use the API's JSON shape, not HTML.
gunicorn_errors.install()

# Loopback unless told otherwise; containers set HOST=0.0.0.0.
bind = os.environ.get("GUNICORN_BIND") or "{}:{}".format(
    os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
)

# One process per core: inference is CPU-bound and each worker holds its own model.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))

# Synchronous workers: the work is CPU-bound, so threads only contend for the
# GIL; measured at 16 connections, gthread's p99 was 19-32 ms against 8 ms.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))

# Import the app, and with it TensorFlow, once in the master so the workers
# share those pages; no TensorFlow op runs before the fork (see post_fork).
preload_app = True

# A request still running after this many seconds is cut off and its worker replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))

# On SIGTERM or reload, in-flight requests get this long to finish.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))

# Reload with SIGHUP to this pid (make reload); the control socket is not needed.
pidfile = os.environ.get("GUNICORN_PIDFILE") or None
control_socket_disable = True

# One JSON object per line on stdout (LOG_FORMAT=text for humans), from the
# app and from Gunicorn's access and error logs alike.
_settings = Config()
accesslog = "-"
errorlog = "-"
loglevel = _settings.LOG_LEVEL.lower()
logconfig_dict = logging_config(_settings.LOG_LEVEL, _settings.LOG_FORMAT)
access_log_format = ACCESS_FORMAT


def on_starting(server):
    """Refuse to start without a servable model; empty the metrics directory."""
    from app.preflight import first_load_error

    error = first_load_error(_settings.MODEL_DIR, _settings.MODEL_VERSION)
    if error:
        # One line naming the path and the cause; no worker is ever forked.
        server.log.error("no servable model: %s", error)
        sys.exit(1)
    # Old files would add stale counts to the new server's metrics.
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)


def pre_fork(server, worker):
    """Keep the preloaded app's objects out of the garbage collector's sight.

    A full collection in a worker writes to every object it traverses, which
    copies each page it shares with the master: measured here, 45 MiB more
    PSS per worker after a few seconds of load. Frozen objects are skipped.
    """
    gc.freeze()


def post_fork(server, worker):
    """Load the model in each new worker, after the fork and before it serves."""
    from app.model import ModelLoadError, configure_tensorflow_threads
    from app.serving import load_model

    # Until the worker installs its own handlers, it still has the master's,
    # which would swallow a stop signal sent while the model loads.
    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(stop_signal, lambda signum, frame: sys.exit(0))
    # One thread per pool: the worker count already covers the cores.
    configure_tensorflow_threads(1)
    try:
        load_model(worker.app.wsgi())
    except ModelLoadError as error:
        server.log.error("no servable model: %s", error)
        # Gunicorn halts the whole server (no respawn loop) on this exit code.
        sys.exit(server.WORKER_BOOT_ERROR)


def post_worker_init(worker):
    """On SIGTERM, answer 503 on /health/ready, keep serving DRAIN_SECONDS, then stop.

    The drain lets a load balancer see the worker leave before it stops
    accepting; in-flight requests then get Gunicorn's graceful timeout.
    """
    from app.serving import serving_state

    state = serving_state(worker.wsgi)

    def stop():
        worker.alive = False
        os.write(worker.PIPE[1], b"1")  # Wake the worker from its wait for connections.

    def drain(signum, frame):
        state.draining = True
        threading.Timer(_settings.DRAIN_SECONDS, stop).start()

    signal.signal(signal.SIGTERM, drain)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (in-flight requests, served model)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
