"""The shadow rows: ``make bench`` (or ``.venv/bin/python -m benchmarks.shadow``).

Three repositories serve the notebook model (version 1) with the server's
defaults: without a shadow; with a retrained notebook model (another seed) as a
shadow sampling every request; and with a MobileNet-sized shadow (one number
spread to a 224x224x3 image, then MobileNetV3Small), slower than its clients.
wrk drives ``/predict/linear`` at c16 on each, in alternating order; each
figure is a median of ``--rounds``. Writes benchmarks/shadow-results.md.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from benchmarks.bench import wrk, wrk_script
from benchmarks.speed import workers
from tests.integration.server import GunicornServer, memory_mib

HERE = Path(__file__).resolve().parent
ROLLOUT = {"latest": 2, "weights": {"1": 100}}


def mobilenet_sized():
    """The notebook model's signature (one number in, one out) over MobileNetV3Small."""
    import keras

    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((1,), name="x"),
            keras.layers.Dense(224 * 224 * 3),
            keras.layers.Reshape((224, 224, 3)),
            keras.applications.MobileNetV3Small(
                input_shape=(224, 224, 3), weights=None, classes=1, classifier_activation=None
            ),
        ]
    )


def repository(root: Path, model_dir: Path, shadow: str | None) -> Path:
    """``root`` holding the notebook model as ``linear/1`` and, for a shadow, ``linear/2``."""
    from tests.conftest import save_version
    from training.train import train

    shutil.copytree(model_dir / sorted(os.listdir(model_dir), key=int)[-1], root / "linear" / "1")
    if shadow == "retrained":
        train("linear", root, epochs=500, seed=7)  # Saved as version 2.
    elif shadow == "mobilenet":
        save_version(mobilenet_sized(), root / "linear", 2)
    entry = {**ROLLOUT, "shadow": {"version": 2, "sample": 1.0}} if shadow else {"latest": 1}
    (root / "version_policy.json").write_text(json.dumps({"linear": entry}))
    return root


def rss_mib(server: GunicornServer) -> float:
    return sum(memory_mib(pid) for pid in workers(server))


def shadow_counts(url: str) -> dict[str, float]:
    counts = {}
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("model_server_shadow_copies_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = counts.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def difference_sums(url: str) -> dict:
    """The shadow difference histograms' sums and counts, by kind."""
    sums = {}
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        for kind in ("absolute", "relative"):
            name = f"model_server_shadow_{kind}_difference_"
            if line.startswith((name + "sum{", name + "count{")):
                part = line[len(name) :].split("{")[0]
                sums[kind, part] = sums.get((kind, part), 0) + float(line.rsplit(" ", 1)[1])
    return sums


def agreement(server: GunicornServer) -> dict:
    """The retrained shadow against the notebook model over the training range."""
    before = difference_sums(server.url)
    started = len(server.output().splitlines())
    for x in np.linspace(-1, 4, 201).round(3):
        requests.post(f"{server.url}/predict/linear", json={"instances": [float(x)]}, timeout=5)
    time.sleep(0.5)
    after = difference_sums(server.url)
    sweep = {key: after[key] - before.get(key, 0) for key in after}
    lines = [
        json.loads(line)
        for line in server.output().splitlines()[started:]
        if "disagreement" in line
    ]
    return {
        "compared": sweep["absolute", "count"],
        "mean absolute difference": sweep["absolute", "sum"] / sweep["absolute", "count"],
        "mean relative difference": sweep["relative", "sum"] / sweep["relative", "count"],
        "largest logged": max(lines, key=lambda line: line["absolute_difference"]) if lines else {},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models/linear"))
    )
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "shadow-results.md")
    args = parser.parse_args(argv)
    lines = [
        "# The shadow rows",
        "",
        f"`make bench` (benchmarks/shadow.py): the notebook model on `/predict/linear`, wrk c16, "
        f"{args.seconds} s a run, {args.rounds} rounds in alternating order, medians; the "
        "server's defaults (2 gevent workers, SHADOW_QUEUE_SIZE=32, SHADOW_SHARE=0.1).",
        "",
        "| figure | median | each round |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        script = wrk_script(scratch, "predict-1")
        servers = {}
        try:
            for kind in (None, "retrained", "mobilenet"):
                root = repository(scratch / str(kind), args.model_dir.resolve(), kind)
                log = scratch / f"{kind}-server" / "server.log"  # Its own pid file beside.
                log.parent.mkdir()
                # Every batch's largest disagreement logged: the largest of all is in the log.
                servers[kind] = GunicornServer(
                    None, log, MODEL_REPOSITORY=root, SHADOW_LOG_SECONDS=0
                )
            for server in servers.values():
                server.wait_until_all_workers_ready(2)
            for server in servers.values():  # Warm, and the shadows' interpreters built.
                wrk(f"{server.url}/predict/linear", script, "warm", 16, 2)
            figures = {kind: {"p99": [], "rate": [], "rss": []} for kind in servers}
            for index in range(args.rounds):
                order = list(servers) if index % 2 == 0 else list(reversed(servers))
                for kind in order:
                    server = servers[kind]
                    run = wrk(f"{server.url}/predict/linear", script, "p99", 16, args.seconds)
                    figures[kind]["p99"].append(run.p99_ms)
                    figures[kind]["rate"].append(run.requests_per_second)
                    figures[kind]["rss"].append(rss_mib(server))
            alone = figures[None]
            for kind, label in (
                ("retrained", "a retrained notebook model"),
                ("mobilenet", "a MobileNet-sized model"),
            ):
                ours = figures[kind]
                p99 = [a / b for a, b in zip(ours["p99"], alone["p99"], strict=True)]
                rate = [a / b for a, b in zip(ours["rate"], alone["rate"], strict=True)]
                lines.append(
                    f"| client p99, shadow {label} sampling 100 % ÷ no shadow | "
                    f"{statistics.median(p99):.2f} | {', '.join(f'{r:.2f}' for r in p99)} |"
                )
                lines.append(
                    f"| client req/s, shadow {label} ÷ no shadow | "
                    f"{statistics.median(rate):.2f} | {', '.join(f'{r:.2f}' for r in rate)} |"
                )
                counts = shadow_counts(servers[kind].url)
                total = sum(counts.values()) or 1
                shares = " / ".join(
                    f"{counts.get(outcome, 0) / total:.1%}"
                    for outcome in ("compared", "dropped", "failed")
                )
                lines.append(
                    f"| copies of {label}: compared / dropped / failed | "
                    f"{shares} of {total:,.0f} | |"
                )
                growth = ours["rss"][-1] - ours["rss"][0]
                lines.append(
                    f"| workers' RSS with {label} as a shadow, first round → last | "
                    f"{ours['rss'][0]:.0f} → {ours['rss'][-1]:.0f} MiB ({growth:+.1f}) | "
                    f"{', '.join(f'{r:.0f}' for r in ours['rss'])} |"
                )
            found = agreement(servers["retrained"])
            lines += [
                "",
                "The notebook model (version 1) against a retrained one (seed 7, version 2) as its "
                f"shadow, over 201 requests spread across the training range [-1, 4] "
                f"({found['compared']:.0f} compared): mean "
                f"absolute difference {found['mean absolute difference']:.4g}, mean relative "
                f"difference {found['mean relative difference']:.4g}. The largest disagreement "
                "logged:",
                "",
                "```json",
                json.dumps(found["largest logged"]),
                "```",
            ]
        finally:
            for server in servers.values():
                server.stop()
    report = "\n".join(lines) + "\n"
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
