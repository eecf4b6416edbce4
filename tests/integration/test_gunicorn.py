"""The service under a real Gunicorn with two workers, over real HTTP.

Run alone with ``.venv/bin/pytest tests/integration``; the fixtures train a
small model, start Gunicorn from ``gunicorn.conf.py`` on a free 127.0.0.1
port and stop it (by pid) afterwards.
"""

import email.utils
import time
from pathlib import Path

import numpy as np
import requests

# Fresh connections land on either worker; this many make missing one unlikely.
ATTEMPTS_TO_SEE_BOTH_WORKERS = 2000


def test_predictions_over_http_match_the_model(server, keras_model):
    response = requests.post(
        f"{server.url}/predict", json={"instances": [10, [2], -1.5]}, timeout=5
    )
    assert response.status_code == 200
    expected = keras_model.predict(np.array([[10.0], [2.0], [-1.5]]), verbose=0).reshape(-1)
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
    assert response.json()["model"] == {"name": "linear", "version": "1"}


def test_readiness_and_model_metadata_are_served(server):
    assert requests.get(f"{server.url}/health/ready", timeout=5).json()["status"] == "ready"
    assert requests.get(f"{server.url}/model", timeout=5).json()["version"] == "1"


def test_both_workers_load_the_model_and_answer(server):
    pids = set()
    for _ in range(ATTEMPTS_TO_SEE_BOTH_WORKERS):
        response = requests.get(f"{server.url}/health/ready", timeout=5)
        assert response.status_code == 200
        pids.add(response.headers["X-Worker-PID"])
        if len(pids) == 2:
            break
    assert len(pids) == 2


def test_the_master_loads_once_and_each_worker_builds_its_runtime_after_the_fork(server):
    log = server.output()
    assert log.count("loaded model linear version 1 (compiled") == 1
    assert log.count("serving model linear version 1 with litert") == 2
    assert "Exception in worker process" not in log


def test_no_process_of_the_server_has_tensorflow_loaded(server):
    for pid in [server.pid, *server.worker_pids()]:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "tensorflow" not in maps and "keras" not in maps, f"pid {pid} maps TensorFlow"


def test_answers_carry_the_current_date(server):
    for _ in range(3):  # Over a second's turn as well.
        before = time.time()
        response = requests.get(f"{server.url}/health/live", timeout=5)
        date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert int(before) <= date <= time.time()
        time.sleep(0.6)


def test_errors_over_http_are_json(server):
    response = requests.post(f"{server.url}/predict", data="nope", timeout=5)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
