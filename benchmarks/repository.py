"""A model repository of 100 notebook models and 3 MobileNetV3Small, measured:
``.venv/bin/python -m benchmarks.repository [--store DIR] [--seconds N]``.

Prints the repository rows of the model-repository issue's table: launch to
ready, the whole server's PSS, `/v2` inference on one of the 100 against a
one-model server (wrk, 16 connections, alternating passes), a new
MobileNetV3Small picked up by a reload while others serve (worst probe,
failed requests), the same by an explicit load call, and a start with one broken
model among 100.
"""

import argparse
import json
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.bench import memory_kib, wrk
from benchmarks.image import build_store as build_mobilenet
from tests.integration.clients import ProbeStream, RequestStream, wait_for
from tests.integration.server import GunicornServer

NOTEBOOK_MODELS = 100
MOBILENETS = 3
MEASURED = "model-042"
HERE = Path(__file__).resolve().parent


def build_repository(root: Path, notebook: Path, store: Path) -> Path:
    """``root``: NOTEBOOK_MODELS copies of the notebook's store and MOBILENETS MobileNets."""
    mobilenet = store / "mobilenet"
    if not (mobilenet / "1" / "signature.json").exists():
        shutil.rmtree(mobilenet, ignore_errors=True)
        build_mobilenet(store)
    shutil.rmtree(root, ignore_errors=True)
    for index in range(NOTEBOOK_MODELS):
        shutil.copytree(notebook, root / f"model-{index:03d}")
    for index in range(MOBILENETS):
        shutil.copytree(mobilenet, root / f"mobilenet-{index}")
    return root


def launch(log: Path, **env) -> tuple[GunicornServer, float]:
    """A two-worker server, and the seconds from launch until both workers are ready."""
    log.parent.mkdir()  # Each server's own: its pid file and metrics live beside the log.
    server = GunicornServer(env.pop("model_dir", None), log, 2, **env)
    return server, server.wait_until_all_workers_ready(2, timeout=120)


def total_pss_mib(server: GunicornServer) -> float:
    pids = [server.process.pid, *server.worker_pids()]
    return sum(memory_kib(pid)["pss"] for pid in pids) / 1024


def infer_script(directory: Path) -> Path:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [10.0]}]}
    path = directory / "infer.lua"
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return path


def add_under_traffic(server: GunicornServer, root: Path, mobilenet: Path, add) -> dict:
    """Copy a MobileNet into the root, ``add()`` it (a SIGHUP, or a load call), and watch
    probes and a request stream until every worker serves it."""
    path = f"/v2/models/{MEASURED}/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}

    def everywhere() -> bool:
        answers = [
            requests.get(f"{server.url}/v2/models/mobilenet-new/ready", timeout=5)
            for _ in range(10)
        ]
        return all(answer.status_code == 200 for answer in answers)

    with RequestStream(server.url, path, body) as stream, ProbeStream(server.url) as probes:
        wait_for(lambda: len(stream.versions) > 20)
        shutil.copytree(mobilenet, root / "mobilenet-new")
        started = time.monotonic()
        add()
        answered = time.monotonic() - started
        at_answer = everywhere()
        wait_for(everywhere, timeout=120, interval=0.2)
        seconds = time.monotonic() - started
        count = len(stream.versions)
        wait_for(lambda: len(stream.versions) > count + 20)
    shutil.rmtree(root / "mobilenet-new")
    return {
        "answered": answered,
        "at_answer": at_answer,
        "seconds": seconds,
        "worst_probe_s": probes.slowest,
        "failed": len(stream.failures) + len(probes.failures),
        "requests": len(stream.versions),
    }


def explicit_load(server: GunicornServer, root: Path, mobilenet: Path) -> dict:
    """The same by a load call on an explicit-mode server: in force on every worker at
    the answer."""

    def load():
        url = f"{server.url}/v2/repository/models/mobilenet-new/load"
        requests.post(url, timeout=120).raise_for_status()

    return add_under_traffic(server, root, mobilenet, load)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-models")
    parser.add_argument("--notebook", type=Path, default=Path("models/linear"))
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args(argv)
    root = build_repository(args.store / "repository", args.notebook, args.store)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        server, ready = launch(scratch / "repository" / "server.log", MODEL_REPOSITORY=root)
        single = None
        try:
            time.sleep(2)  # Settle before PSS is read.
            pss = total_pss_mib(server)
            rows.append(
                ("100 notebook models + 3 MobileNetV3Small: launch to ready", f"{ready:.2f} s")
            )
            rows.append(("the same: total PSS (master and 2 workers)", f"{pss:.0f} MiB"))
            single, _ = launch(scratch / "single" / "server.log", model_dir=root / MEASURED)
            script, path = infer_script(scratch), f"/v2/models/{MEASURED}/infer"
            ratios = []
            for _ in range(2):
                many = wrk(server.url + path, script, "v2-1", 16, args.seconds)
                one = wrk(single.url + path, script, "v2-1", 16, args.seconds)
                ratios.append(many.requests_per_second / one.requests_per_second)
                print(
                    f"  repository {many.requests_per_second:,.0f} req/s, "
                    f"one model {one.requests_per_second:,.0f} req/s"
                )
            rows.append(
                (
                    f"`/v2/models/{MEASURED}/infer` ÷ the same on a one-model server, c16",
                    f"{statistics.median(ratios):.2f} (passes: "
                    f"{', '.join(f'{r:.2f}' for r in ratios)})",
                )
            )
            hup = lambda: server.process.send_signal(signal.SIGHUP)  # noqa: E731
            reload = add_under_traffic(server, root, root / "mobilenet-0", hup)
            rows.append(
                (
                    "a new MobileNetV3Small by reload while others serve: worst probe, "
                    "failed requests",
                    f"{reload['worst_probe_s'] * 1000:.0f} ms, {reload['failed']} of "
                    f"{reload['requests']} (served everywhere after {reload['seconds']:.1f} s)",
                )
            )
        finally:
            server.stop()
            if single:
                single.stop()
        server, _ = launch(
            scratch / "explicit" / "server.log",
            MODEL_REPOSITORY=root,
            MODEL_CONTROL_MODE="explicit",
        )
        try:
            load = explicit_load(server, root, root / "mobilenet-0")
        finally:
            server.stop()
        rows.append(
            (
                "the same by an explicit load call: answer, worst probe, failed requests",
                f"answered in {load['answered']:.2f} s, served by every worker at the answer: "
                f"{'yes' if load['at_answer'] else 'no'}; {load['worst_probe_s'] * 1000:.0f} ms, "
                f"{load['failed']} of {load['requests']}",
            )
        )
        shutil.rmtree(root / "model-000")
        (root / "model-000" / "1").mkdir(parents=True)
        (root / "model-000" / "1" / "metadata.json").write_text("not JSON")
        server, _ = launch(scratch / "broken" / "server.log", MODEL_REPOSITORY=root)
        try:
            index = requests.post(f"{server.url}/v2/repository/index", timeout=10).json()
        finally:
            server.stop()
        ready = [model for model in index if model["state"] == "READY"]
        broken = [model for model in index if model["state"] == "UNAVAILABLE"]
        notebook_ready = sum(model["name"].startswith("model-") for model in ready)
        rows.append(
            (
                "one broken model among 100",
                f"{notebook_ready} served; {len(broken)} listed: "
                f"{broken[0]['name']}: {broken[0]['reason'][:60]}…",
            )
        )
    table = "\n".join(f"| {what} | {measured} |" for what, measured in rows)
    report = (
        f"# Model repository\n\n`.venv/bin/python -m benchmarks.repository` (2 workers, this "
        f"machine; absolute figures vary by machine, ratios less).\n\n"
        f"| what | measured |\n|---|---|\n{table}\n"
    )
    print(report)
    (HERE / "repository-results.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
