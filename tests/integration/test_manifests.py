"""The deployment manifests run as shipped: each starts the server and passes its probes.

For each manifest, the server is started with the environment the container
would get (the image's ``ENV`` from the Dockerfile, then the manifest's own),
in a mount namespace that reproduces its filesystem: the root read-only when
the manifest says so, a fresh tmpfs for each ``emptyDir`` it mounts, the
model store where the image or KServe's storage initializer puts it. Then
every probe it declares is run against it, with its timeout.

What is replaced, and why: the listening address and ports (tests talk to
127.0.0.1 on free ports; each container port maps to one, as ``docker -p``
does), and the store's contents (the session's trained model). Not its user:
this machine's Python lives where only root reads (``make image-test`` runs the
image as that user). Needs root, for the mount namespace; run alone with
``.venv/bin/pytest tests/integration/test_manifests.py``.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.server import ROOT, free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root for a mount namespace (unshare, mount)"
)

DEPLOY = ROOT / "deploy"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def image_environment() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last stage (the runtime image)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    last_stage = text.rsplit("\nFROM ", 1)[1]
    environment = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                environment[key] = value
    # The image's venv; here, the project's own.
    environment.pop("PATH", None)
    return environment


def container_env(container: dict) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


def load(relative: str) -> dict:
    return yaml.safe_load((DEPLOY / relative).read_text())


def kserve(inference_service: str) -> tuple[dict, dict, list]:
    """The runtime's container, its environment with the InferenceService's model env
    over it (as KServe merges them), and the pod's volumes."""
    runtime = load("kserve/servingruntime.yaml")["spec"]
    (container,) = runtime["containers"]
    model = load(inference_service)["spec"]["predictor"]["model"]
    environment = {**container_env(container), **container_env(model)}
    return container, environment, runtime.get("volumes", [])


def deployment() -> tuple[dict, dict, list]:
    pod = load("k8s/deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, container_env(container), pod.get("volumes", [])


MANIFESTS = {
    "kserve-inferenceservice": lambda: kserve("kserve/inferenceservice.yaml"),
    "kserve-canary": lambda: kserve("kserve/canary.yaml"),
    "k8s-deployment": deployment,
}


class ManifestServer:
    """The server as the manifest's container runs it, in a mount namespace of its own."""

    def __init__(self, container: dict, environment: dict, volumes: list, store: Path, log):
        self.container = container
        environment = {**image_environment(), **environment}
        self.ports = {}  # container port -> free port here
        for key in ("PORT", "GRPC_PORT"):
            if int(environment.get(key, "0")):
                self.ports[int(environment[key])] = environment[key] = str(free_port())
        environment["HOST"] = "127.0.0.1"
        # The store under a tmpfs at /mnt: where KServe's storage initializer puts it
        # (/mnt/models); the image's baked-in /models/linear becomes /mnt/linear.
        mounted = Path("/mnt") / Path(environment["MODEL_DIR"]).name
        environment["MODEL_DIR"] = str(mounted)
        environment["PATH"] = os.environ["PATH"]
        # The project too (it may live under /tmp, which an emptyDir would hide).
        project, python = Path("/mnt/project"), Path(sys.executable)
        if python.is_relative_to(ROOT):
            python = project / python.relative_to(ROOT)
        steps = [
            "mount -t tmpfs tmpfs /mnt",
            f"mkdir {mounted} {project}",
            f"mount --bind -o ro {shlex.quote(str(store))} {mounted}",
            f"mount --bind {shlex.quote(str(ROOT))} {project}",
        ]
        empty_dirs = {volume["name"] for volume in volumes if "emptyDir" in volume}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in empty_dirs:
                steps.append(f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(mount['mountPath'])}")
        if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            steps.append("mount -o remount,bind,ro /")  # Read-only for root too (EROFS).
        steps.append(f"cd {project}")
        steps.append("exec " + shlex.join([str(python), "-m", "app.serve"]))
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-ec", " && ".join(steps)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def port(self, probe_port) -> int:
        """The free port here for a probe's port, by number or by the container's port name."""
        if isinstance(probe_port, str):
            (probe_port,) = [
                port["containerPort"]
                for port in self.container.get("ports", [])
                if port.get("name") == probe_port
            ]
        return int(self.ports[int(probe_port)])

    def probe(self, probe: dict) -> None:
        """Run one probe as the kubelet does; raise if it fails within its timeout."""
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            check = probe["httpGet"]
            url = f"http://127.0.0.1:{self.port(check['port'])}{check.get('path', '/')}"
            status = requests.get(url, timeout=timeout).status_code
            assert 200 <= status < 400, f"{url}: {status}"
        elif "grpc" in probe:
            target = f"127.0.0.1:{self.port(probe['grpc']['port'])}"
            with grpc.insecure_channel(target) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                    timeout=timeout,
                )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, target
        else:
            raise AssertionError(f"a probe this test cannot run: {probe}")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_the_manifest_starts_the_server_and_passes_every_probe(manifest, model_dir, tmp_path):
    container, environment, volumes = MANIFESTS[manifest]()
    store = tmp_path / "store"
    shutil.copytree(model_dir, store)
    log_path = tmp_path / "server.log"
    probes = [container[kind] for kind in PROBES if kind in container]
    assert probes, f"{manifest} declares no probe"
    with open(log_path, "w") as log:
        server = ManifestServer(container, environment, volumes, store, log)
        try:
            deadline, last = time.monotonic() + 60, None
            while time.monotonic() < deadline:
                assert server.process.poll() is None, f"exited:\n{log_path.read_text()}"
                try:
                    for probe in probes:
                        server.probe(probe)
                    break
                except (AssertionError, requests.RequestException, grpc.RpcError) as error:
                    last = error
                    time.sleep(0.2)
            else:
                pytest.fail(
                    f"{manifest}: a probe still fails after 60 s ({last}):\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            for _ in range(3):  # Passing once is not enough: every time, within its timeout.
                for probe in probes:
                    server.probe(probe)
        finally:
            code = server.stop()
    assert code == 0, log_path.read_text()[-3000:]
    assert not re.search(r'"level":"(ERROR|CRITICAL)"', log_path.read_text()), log_path.read_text()
