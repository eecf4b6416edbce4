"""gRPC beside REST: ``make bench`` (or ``.venv/bin/python -m benchmarks.grpc``).

Serves the model under MODEL_DIR and MobileNetV3Small (built as
benchmarks/image.py builds it) with two workers each, and drives the same
inference both ways with C load generators on 127.0.0.1: wrk posts the Open
Inference Protocol's binary tensors to ``/v2/models/{name}/infer`` (as
tritonclient's HTTP client sends), h2load sends ``ModelInfer`` with
``raw_input_contents`` (as tritonclient's gRPC client sends). One instance,
1,000 instances and one image per request. Writes benchmarks/grpc-results.md.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from app.grpc import open_inference_pb2 as pb
from benchmarks.bench import binary_script, wrk
from benchmarks.image import build_store
from tests.integration.clients import oip_call
from tests.integration.server import GunicornServer

HERE = Path(__file__).resolve().parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model: str, name: str, array: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(array, "<f4").tobytes())
    return request


def grpc_frame(request: pb.ModelInferRequest) -> bytes:
    """A gRPC message as it travels: uncompressed flag, big-endian length, the bytes."""
    message = request.SerializeToString()
    return b"\0" + len(message).to_bytes(4, "big") + message


def h2load(target: str, body: Path, connections: int, seconds: int) -> dict:
    """One bounded h2load run of unary gRPC calls; requests per second and mean latency."""
    command = [
        "h2load",
        f"--duration={seconds}",
        "--warm-up-time=1",
        f"--clients={connections}",
        "--max-concurrent-streams=1",
        "--threads=1",
        f"--data={body}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"http://{target}{METHOD}",
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", output)
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output).group(1))
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output).group(1)
    return {
        "requests_per_second": rate,
        "mean_ms": duration_ms(mean),
        "failed": int(done.group(1)) - int(done.group(2)),
    }


def duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def check_answer(target: str, request: pb.ModelInferRequest) -> None:
    """The body h2load sends is a call the server answers OK."""
    oip_call(target, "ModelInfer", request, pb.ModelInferResponse)


def cases(model_dir: Path, image_dir: Path) -> list[tuple[str, Path, str, str, np.ndarray]]:
    rng = np.random.default_rng(0)
    one = rng.uniform(-100, 100, (1, 1)).astype(np.float32)
    many = rng.uniform(-100, 100, (1000, 1)).astype(np.float32)
    image = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    name = model_dir.name
    return [
        ("one instance", model_dir, name, "x", one),
        ("1,000 instances", model_dir, name, "x", many),
        ("one 224×224×3 image", image_dir, "mobilenet", "input_layer", image),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models/linear"))
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--output", type=Path, default=HERE / "grpc-results.md")
    args = parser.parse_args(argv)
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            print(f"{tool} is missing: make bench installs it", file=sys.stderr)
            return 2
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        image_dir = build_store(scratch / "store")
        for label, model_dir, model, name, array in cases(args.model_dir, image_dir):
            server = GunicornServer(model_dir, scratch / f"{model}.log", workers=2)
            try:
                server.wait_until_all_workers_ready(2)
                request = infer_request(model, name, array)
                check_answer(server.grpc_target, request)
                body = scratch / "call.bin"
                body.write_bytes(grpc_frame(request))
                script = binary_script(scratch, "grpc-bench", array, name)
                rest = wrk(
                    f"{server.url}/v2/models/{model}/infer",
                    script,
                    "v2bin",
                    args.connections,
                    args.seconds,
                )
                over_grpc = h2load(server.grpc_target, body, args.connections, args.seconds)
            finally:
                server.stop()
            rows.append((label, rest, over_grpc))
            print(label, rest, over_grpc, flush=True)
    report = markdown(rows, args)
    args.output.write_text(report)
    print(report)
    return 0


def markdown(rows, args) -> str:
    lines = [
        "# gRPC beside REST",
        "",
        f"`make bench` (benchmarks/grpc.py): 2 workers, {args.connections} connections, "
        f"{args.seconds} s a run, on this machine ({os.cpu_count()} cores, shared with the "
        "load generator). REST: wrk posting /v2 binary tensors; gRPC: h2load sending "
        "ModelInfer with raw_input_contents, one call at a time per connection.",
        "",
        "| request | REST req/s | REST p50 / p99 ms | gRPC req/s | gRPC mean ms | gRPC ÷ REST |",
        "|---|---|---|---|---|---|",
    ]
    for label, rest, over_grpc in rows:
        failed = f" ({over_grpc['failed']} failed)" if over_grpc["failed"] else ""
        lines.append(
            f"| {label} | {rest.requests_per_second:,.0f} | {rest.p50_ms:.2f} / "
            f"{rest.p99_ms:.2f} | {over_grpc['requests_per_second']:,.0f}{failed} | "
            f"{over_grpc['mean_ms']:.2f} | "
            f"{over_grpc['requests_per_second'] / rest.requests_per_second:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
