"""Start the server: ``python -m app.serve`` checks the settings, then becomes Gunicorn.

Gunicorn reads some variables itself before any configuration file runs
(``WEB_CONCURRENCY=abc`` is a traceback inside Gunicorn's import), so the
settings are checked here first: nonsense stops the start with one line.
"""

import os
import socket
import sys

from app.config import Config, ConfigError


def main(argv: list[str]) -> None:
    try:
        config = Config()
    except ConfigError as error:
        sys.exit(f"model server: configuration error: {error}")
    problem = already_running(config.GUNICORN_PIDFILE) or port_in_use(config.GUNICORN_BIND)
    if problem:
        sys.exit(f"model server: {problem}")
    # exec: Gunicorn takes this process's place, so it is PID 1 in a container and gets signals.
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", *argv]
    os.execv(sys.executable, command)


ANOTHER_PORT = (
    "serve this one on another port, e.g. PORT=8001 make serve "
    "(its gRPC port, PORT+81, and its pid file follow PORT)"
)


def already_running(pidfile) -> str | None:
    """Why not to start: a server that runs at the pid in GUNICORN_PIDFILE; else None."""
    try:
        pid = int(pidfile.read_text().strip()) if pidfile else 0
    except (OSError, ValueError):
        return None
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        return None  # No file, or a stale one: Gunicorn replaces it.
    return f"a server already runs on pid {pid} (GUNICORN_PIDFILE={pidfile}); {ANOTHER_PORT}"


def port_in_use(bind: str) -> str | None:
    """Why not to start: something listens on HOST:PORT already; else None."""
    if bind.startswith(("unix:", "fd://")) or not in_use(bind):
        return None
    return f"PORT {bind.rpartition(':')[2]} is in use ({bind}); {ANOTHER_PORT}"


def in_use(address: str) -> bool:
    """Whether another socket listens on ``host:port`` (``[v6]:port`` too).

    Bound as Gunicorn and gRPC bind, with SO_REUSEADDR: a port whose last
    connections linger in TIME_WAIT (a restart just after load) is free.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return True
        except ValueError:  # Not a port: Gunicorn says so itself.
            return False
    return False


if __name__ == "__main__":
    main(sys.argv[1:])
