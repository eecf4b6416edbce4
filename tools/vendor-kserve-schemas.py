"""Vendor KServe's CRD schemas for `make lint-deploy`: tools/vendor-kserve-schemas.py [TAG]

Reads KServe's generated CRDs (config/crd/full/ at the tag; from GitHub, or
from a local clone with KSERVE_REPO=/path/to/kserve) and writes each CRD
version's openAPIV3Schema to deploy/kserve/schemas/<kind>-<version>.json.
"""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

TAG = sys.argv[1] if len(sys.argv) > 1 else "v0.20.0"
CRDS = ("serving.kserve.io_servingruntimes.yaml", "serving.kserve.io_inferenceservices.yaml")
OUT = Path(__file__).resolve().parents[1] / "deploy" / "kserve" / "schemas"


def crd_text(name: str) -> str:
    path = f"config/crd/full/{name}"
    if os.environ.get("KSERVE_REPO"):
        command = ["git", "-C", os.environ["KSERVE_REPO"], "show", f"{TAG}:{path}"]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
    url = f"https://raw.githubusercontent.com/kserve/kserve/{TAG}/{path}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in CRDS:
        crd = yaml.safe_load(crd_text(name))
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = {"$comment": f"KServe {TAG}, {name}", **version["schema"]["openAPIV3Schema"]}
            path = OUT / f"{kind}-{version['name']}.json"
            path.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
            print(f"{path.relative_to(OUT.parents[2])}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
