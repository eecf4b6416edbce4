"""Run the locust load test against a server it starts: ``make loadtest``.

Starts Gunicorn from gunicorn.conf.py on 127.0.0.1 against MODEL_DIR, runs
tests/load/locustfile.py headless for a bounded time, writes an HTML report
and CSVs under reports/, and exits non-zero when any request failed or the
95th percentile of all requests exceeds the threshold.
"""

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ROOT, GunicornServer

P95_THRESHOLD_MS = 50


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=int, default=10)
    parser.add_argument("--run-time", default="30s")
    parser.add_argument("--p95-ms", type=float, default=P95_THRESHOLD_MS)
    parser.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models/linear"))
    )
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    args.reports.mkdir(exist_ok=True)

    server = GunicornServer(args.model_dir, args.reports / "loadtest-server.log")
    try:
        server.wait_until_all_workers_ready(server.workers)
        locust = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "tests" / "load" / "locustfile.py"),
                "--headless",
                "--host",
                server.url,
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.spawn_rate),
                "--run-time",
                args.run_time,
                "--stop-timeout",
                "5",
                "--html",
                str(args.reports / "loadtest.html"),
                "--csv",
                str(args.reports / "loadtest"),
                "--only-summary",
            ],
            timeout=600,
        )
    finally:
        server.stop()

    with open(args.reports / "loadtest_stats.csv") as stats:
        rows = list(csv.DictReader(stats))
    print("\n| request | count | failures | median ms | p95 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['Name']} | {row['Request Count']} | {row['Failure Count']} | "
            f"{row['50%']} | {row['95%']} | {row['99%']} | {float(row['Requests/s']):.0f} |"
        )
    total = next(row for row in rows if row["Name"] == "Aggregated")
    failures, p95 = int(total["Failure Count"]), float(total["95%"])
    print(f"\nthreshold: no failed request and p95 <= {args.p95_ms:g} ms over all requests")
    if failures or p95 > args.p95_ms or locust.returncode not in (0, 1):
        print(f"FAILED: {failures} failed requests, p95 {p95:g} ms", file=sys.stderr)
        return 1
    print(f"passed: {failures} failed requests, p95 {p95:g} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
