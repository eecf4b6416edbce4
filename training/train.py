"""Train the notebook model with a fixed seed and save it as a new version, with its lineage."""

import argparse
import json
import logging
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.runtime.compiler import compile_version
from app.runtime.store import next_version_number
from training import data
from training.profile import input_profile
from training.version import ARTIFACT_FILES, MODEL_FILENAME, sha256_file

log = logging.getLogger("training")

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """What one training run did: parameters, data, loss per epoch, where it saved."""

    name: str
    epochs: int
    seed: int
    data_path: Path
    optimizer: str = "sgd"
    loss: str = "mean_squared_error"
    losses: list[float] = field(default_factory=list)
    path: Path | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def parameters(self) -> dict:
        return {
            "name": self.name,
            "epochs": self.epochs,
            "seed": self.seed,
            "optimizer": self.optimizer,
            "loss": self.loss,
            "batch_size": "full (all rows)",
            "data": str(self.data_path),
        }


def build_model() -> keras.Model:
    """The notebook's architecture: one Dense unit on one input, SGD, MSE."""
    # Named so the signature reads "x" in, "y" out; the math is the notebook's.
    model = keras.Sequential(
        [keras.Input(shape=(1,), name="x"), keras.layers.Dense(units=1, name="y")]
    )
    model.compile(optimizer="sgd", loss="mean_squared_error")
    return model


def fit(model: keras.Model, xs, ys, epochs: int, seed: int) -> list[float]:
    """Fit deterministically and return the training loss of every epoch."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    history = model.fit(xs, ys, epochs=epochs, batch_size=len(xs), shuffle=False, verbose=0)
    return [float(loss) for loss in history.history["loss"]]


def git_state(directory: Path = REPOSITORY) -> dict:
    """The commit of the code that trains, and whether the tree had changes; None outside git."""

    def git(*args):
        result = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain") if commit else None
    except (OSError, subprocess.TimeoutExpired):
        commit = status = None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def save_version(model: keras.Model, base_dir: Path, metadata: dict) -> Path:
    """Write ``base_dir/<N+1>/``: the model, its compiled serving artifact, ``metadata.json``.

    The version directory is written under a temporary name and renamed into
    place, so a server scanning ``base_dir`` never sees a half-written version.
    ``metadata.json`` records every artifact's SHA-256 and where the version lives.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    version = next_version_number(base_dir)
    staging = base_dir / f".{version}.partial"
    staging.mkdir()
    model.save(staging / MODEL_FILENAME)
    # Probes for the golden check come from the training data's range.
    compile_version(staging, metadata.get("input_profile"))
    final = base_dir / str(version)
    metadata = {
        "version": version,
        **metadata,
        "saved_to": str(final.resolve()),
        "artifacts": {name: sha256_file(staging / name) for name in ARTIFACT_FILES},
    }
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    staging.rename(final)
    return final


def train(
    name: str, output_dir: Path, epochs: int, seed: int, data_path: Path = data.DEFAULT_DATA
) -> Run:
    """Check the data, build, fit and save one version; return what the run did."""
    run = Run(name, epochs, seed, data_path)
    xs, ys = data.load(data_path)
    keras.utils.set_random_seed(seed)
    model = build_model()
    run.losses = fit(model, xs, ys, epochs=epochs, seed=seed)
    metadata = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": git_state(),
        "framework": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "data": {"path": str(data_path), "rows": len(xs), "sha256": data.sha256(data_path)},
        "training": {**run.parameters, "final_loss": run.losses[-1]},
        # What the server compares live inputs with (app/ops/monitoring.py).
        "input_profile": input_profile({"x": xs}),
    }
    run.path = save_version(model, output_dir / name, metadata)
    run.metadata = json.loads((run.path / "metadata.json").read_text())
    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--name", default="linear", help="model name (default: linear)")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("models"), help="model store root (default: models)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=data.DEFAULT_DATA,
        help=f"training data, a CSV with columns x,y (default: {data.DEFAULT_DATA})",
    )
    parser.add_argument("--epochs", type=int, default=500, help="training epochs (default: 500)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument(
        "--register",
        action="store_true",
        help="log the run to MLflow and register the version (needs MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--alias", help="with --register: point this alias at the new version")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.alias and not args.register:
        parser.error("--alias needs --register")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    if args.register:
        from training.registry import RegistryError, check_tracking_uri

        try:
            check_tracking_uri()
        except RegistryError as error:
            print(f"cannot register: {error}", file=sys.stderr)
            return 2
    try:
        run = train(args.name, args.output_dir, args.epochs, args.seed, args.data)
    except data.DataError as error:
        print(f"cannot train: {error}", file=sys.stderr)
        return 1
    log.info("saved %s (final loss %.3g after %d epochs)", run.path, run.losses[-1], args.epochs)
    if args.register:
        from training.registry import RegistryError, register

        try:
            registered = register(run, args.alias)
        except RegistryError as error:
            print(f"cannot register: {error}", file=sys.stderr)
            return 1
        log.info(
            "registered %s version %s (run %s)%s",
            registered["name"],
            registered["version"],
            registered["run_id"],
            f", alias {args.alias!r}" if args.alias else "",
        )
    return 0
