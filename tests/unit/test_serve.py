"""``python -m app.serve`` refuses, in one line naming the setting, what Gunicorn would retry."""

import os
import socket

from app.serve import already_running, port_in_use


def test_a_port_something_listens_on_is_named_with_the_setting_to_change():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        problem = port_in_use(f"127.0.0.1:{port}")
    assert problem.startswith(f"PORT {port} is in use") and "PORT=8001 make serve" in problem
    assert port_in_use(f"127.0.0.1:{port}") is None  # Closed: free again.
    assert port_in_use("unix:/tmp/model-server.sock") is None


def test_a_live_pid_in_the_pid_file_is_named_and_a_stale_one_is_not(tmp_path):
    pidfile = tmp_path / "gunicorn.pid"
    assert already_running(pidfile) is None
    pidfile.write_text(str(os.getpid()))
    assert f"already runs on pid {os.getpid()} (GUNICORN_PIDFILE={pidfile})" in already_running(
        pidfile
    )
    pidfile.write_text("999999999")
    assert already_running(pidfile) is None
    assert already_running(None) is None
