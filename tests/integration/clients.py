"""Clients for tests against a real Gunicorn: request streams and polling helpers."""

import signal
import threading
import time

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

PREDICT = {"instances": [10, 2]}


class RequestStream:
    """Posts predictions back to back in a thread, recording versions and failures."""

    def __init__(
        self, url: str, path: str = "/predict", body: dict = PREDICT, keep_alive=False, headers=None
    ):
        """``keep_alive``: one connection reused as long as the server keeps it (a Session)."""
        self.url, self.versions, self.failures = url, [], []
        self.path, self.body, self.headers = path, body, headers
        self._client = requests.Session() if keep_alive else requests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                response = self._client.post(
                    f"{self.url}{self.path}", json=self.body, headers=self.headers, timeout=10
                )
            except requests.RequestException as error:
                self.failures.append(repr(error))
                continue
            if response.status_code == 200:
                answer = response.json()
                # /predict names the version under "model", /v2 as "model_version".
                self.versions.append(
                    answer.get("model", {}).get("version") or answer.get("model_version")
                )
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


# TCP states as the kernel's tables (/proc/net/tcp) write them.
ESTABLISHED, CLOSE_WAIT = "01", "08"


def connections_to(port: int, state: str = ESTABLISHED) -> int:
    """TCP connections to the server's ``port`` in ``state``, counted from the kernel's tables.

    ``CLOSE_WAIT``: the client has closed, the server has not yet.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == state:
                    count += 1
    return count


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


# No liveness probe may wait longer than this during a reload.
PROBE_LIMIT_SECONDS = 1.0


class ProbeStream(RequestStream):
    """Liveness probes back to back, recording the slowest."""

    def __init__(self, url: str):
        super().__init__(url)
        self.slowest, self.answers = 0.0, []

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = requests.get(f"{self.url}/health/live", timeout=10)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    self.answers.append(time.monotonic() - started)
            except requests.RequestException as error:
                self.failures.append(repr(error))
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.02)


def reload_under_load(server, change_store, until, **request):
    """Stream predictions (``request``: RequestStream's path, body and keep_alive) and
    probes, change the store, SIGHUP, wait for ``until``; assert nothing failed or waited."""
    with RequestStream(server.url, **request) as stream, ProbeStream(server.url) as probes:
        wait_for(lambda: len(stream.versions) > 20)
        change_store()
        server.process.send_signal(signal.SIGHUP)
        wait_for(until, timeout=90)
        count = len(stream.versions)
        wait_for(lambda: len(stream.versions) > count + 20)
    assert stream.failures == [], stream.failures[:3]
    assert probes.failures == [], probes.failures[:3]
    assert probes.slowest < PROBE_LIMIT_SECONDS, f"a probe waited {probes.slowest:.2f} s"
    return stream


def oip_call(target: str, method: str, request, response_type, timeout: float = 30, metadata=()):
    """One call of ``inference.GRPCInferenceService`` with this server's own messages."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return call(request, timeout=timeout, metadata=metadata)
