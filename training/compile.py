"""``python -m training compile VERSION...``: write the serving artifact for saved versions.

A version directory is compiled in place (app/runtime/compiler.py); a
registered version (``models:/<name>/<N>``, ``models:/<name>@<alias>``) is
compiled and its compiled copy registered as a new version.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from app.runtime.artifact import ArtifactError
from app.runtime.compiler import compile_version
from app.runtime.model_code import CodePolicy

log = logging.getLogger("training")


def compile_from_registry(uri: str, policy: CodePolicy) -> bool:
    """Compile a registered version and register the result; True when it failed (said why)."""
    from training.registry import RegistryError, compile_registered

    try:
        log.info("%s", compile_registered(uri, policy))
    except (RegistryError, ArtifactError) as error:
        print(f"cannot compile {uri}: {error}", file=sys.stderr)
        return True
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training compile",
        description="Write the serving artifact (model.tflite, signature.json, golden.npz) "
        "for saved versions.",
    )
    parser.add_argument(
        "version_dirs",
        nargs="+",
        metavar="VERSION",
        help="version directories, or registered versions (models:/<name>/<N>, "
        "models:/<name>@<alias>), whose compiled copy is registered as a new version",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        # The server's own settings: what a model file may make this process run.
        policy = CodePolicy.from_environ(os.environ)
    except ValueError as error:
        print(f"cannot compile: {error}", file=sys.stderr)
        return 2
    for version_dir in args.version_dirs:
        if version_dir.startswith("models:/"):
            if compile_from_registry(version_dir, policy):
                return 1
            continue
        version_dir = Path(version_dir)
        try:
            compiled = compile_version(version_dir, policy=policy)
        except ArtifactError as error:
            print(f"cannot compile {version_dir}: {error}", file=sys.stderr)
            return 1
        ranges = {spec.name: list(spec.valid_range) for spec in compiled.inputs if spec.valid_range}
        how = (
            f"the TensorFlow runtime, as {compiled.why}"
            if compiled.runtime == "tensorflow"
            else f"LiteRT with {compiled.kernels} kernels"
        )
        log.info(
            "compiled %s (%s for %s, sha256 %s)%s",
            version_dir,
            compiled.file,
            how,
            compiled.sha256[:12],
            f"; inputs refused beyond {ranges}" if ranges else "",
        )
    return 0
