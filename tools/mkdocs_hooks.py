"""MkDocs hooks: the OpenAPI reference page, rendered by ReDoc from files in the site.

The committed ``openapi.yaml`` (which a test keeps equal to the app's) goes into
the site as a script that sets ``OPENAPI_SPEC``, and ReDoc's standalone bundle
(``make docs-assets``) beside it, so the page renders offline, from a file too.
"""

import json
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REDOC = ROOT / "app" / "static" / "docs" / "redoc" / "redoc.standalone.js"


def on_post_build(config, **kwargs):
    assets = Path(config["site_dir"]) / "assets" / "reference"
    assets.mkdir(parents=True, exist_ok=True)
    if not REDOC.is_file():
        raise FileNotFoundError(f"{REDOC} is missing: make docs-assets fetches it")
    shutil.copyfile(REDOC, assets / "redoc.standalone.js")
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    (assets / "openapi.js").write_text(f"const OPENAPI_SPEC = {json.dumps(spec)};\n")
