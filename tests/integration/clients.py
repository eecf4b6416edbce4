"""Clients for tests against a real Gunicorn: request streams and polling helpers."""

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

PREDICT = {"instances": [10, 2]}


class RequestStream:
    """Posts predictions back to back in a thread, recording versions and failures."""

    def __init__(self, url: str):
        self.url, self.versions, self.failures = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                response = requests.post(f"{self.url}/predict", json=PREDICT, timeout=10)
            except requests.RequestException as error:
                self.failures.append(repr(error))
                continue
            if response.status_code == 200:
                self.versions.append(response.json()["model"]["version"])
            else:
                self.failures.append(f"{response.status_code} {response.text}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def metric_values(url) -> dict:
    """Every sample of ``/metrics`` by ``(name, sorted labels)``."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(condition, timeout=60, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


def readiness_answers(url, attempts=40) -> list[requests.Response]:
    """/health/ready over fresh connections, so that either worker may answer."""
    return [requests.get(f"{url}/health/ready", timeout=5) for _ in range(attempts)]


def served_versions(url) -> set:
    """The model versions the workers answering fresh connections serve."""
    return {answer.json()["model"]["version"] for answer in readiness_answers(url)}


def served_by(url) -> set:
    """The pids of the workers that answer fresh connections."""
    return {answer.headers["X-Worker-PID"] for answer in readiness_answers(url)}
