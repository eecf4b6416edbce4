"""Gunicorn settings for the model server; each has an environment override."""

import multiprocessing
import os
import sys

from app.config import Config
from app.logs import ACCESS_FORMAT, logging_config

# Loopback unless told otherwise; containers set HOST=0.0.0.0.
bind = os.environ.get("GUNICORN_BIND") or "{}:{}".format(
    os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
)

# One process per core: inference is CPU-bound and each worker holds its own model.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))

# Synchronous workers: inference is CPU-bound, so threads would only contend
# for the GIL (see benchmarks/results.md for the measurement).
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


def post_fork(server, worker):
    """Load the model in each new worker, after the fork and before it serves."""
    from app.model import ModelLoadError, configure_tensorflow_threads
    from app.serving import load_model

    # One thread per pool: the worker count already covers the cores.
    configure_tensorflow_threads(1)
    try:
        load_model(worker.app.wsgi())
    except ModelLoadError as error:
        server.log.error("no servable model: %s", error)
        # Gunicorn halts the whole server (no respawn loop) on this exit code.
        sys.exit(server.WORKER_BOOT_ERROR)
