"""Train the notebook model with a fixed seed and save it as a new version."""

import argparse
import hashlib
import json
import logging
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.store import next_version_number
from training.compile import compile_version

log = logging.getLogger("training")

# The notebook's six points on the line y = 3x + 1.
XS = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
YS = np.array([-2.0, 1.0, 4.0, 7.0, 10.0, 13.0], dtype=np.float32)

MODEL_FILENAME = "model.keras"


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Return the notebook's training inputs and targets as column vectors."""
    return XS.reshape(-1, 1), YS.reshape(-1, 1)


def data_hash(xs: np.ndarray, ys: np.ndarray) -> str:
    """SHA-256 over the float32 bytes of inputs and targets."""
    digest = hashlib.sha256()
    for array in (xs, ys):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def build_model() -> keras.Model:
    """The notebook's architecture: one Dense unit on one input, SGD, MSE."""
    # Named so the signature reads "x" in, "y" out; the math is the notebook's.
    model = keras.Sequential(
        [keras.Input(shape=(1,), name="x"), keras.layers.Dense(units=1, name="y")]
    )
    model.compile(optimizer="sgd", loss="mean_squared_error")
    return model


def fit(model: keras.Model, xs, ys, epochs: int, seed: int) -> float:
    """Fit deterministically and return the final training loss."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    history = model.fit(xs, ys, epochs=epochs, batch_size=len(xs), shuffle=False, verbose=0)
    return float(history.history["loss"][-1])


def save_version(model: keras.Model, base_dir: Path, metadata: dict) -> Path:
    """Write ``base_dir/<N+1>/``: the model, its compiled serving artifact, ``metadata.json``.

    The version directory is written under a temporary name and renamed into
    place, so a server scanning ``base_dir`` never sees a half-written version.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    version = next_version_number(base_dir)
    staging = base_dir / f".{version}.partial"
    staging.mkdir()
    model.save(staging / MODEL_FILENAME)
    compile_version(staging)
    metadata = {"version": version, **metadata}
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    final = base_dir / str(version)
    staging.rename(final)
    return final


def train(name: str, output_dir: Path, epochs: int, seed: int) -> Path:
    """Build, fit and save one version; return its directory."""
    xs, ys = load_data()
    keras.utils.set_random_seed(seed)
    model = build_model()
    final_loss = fit(model, xs, ys, epochs=epochs, seed=seed)
    metadata = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "framework": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "training": {
            "data_sha256": data_hash(xs, ys),
            "samples": len(xs),
            "epochs": epochs,
            "seed": seed,
            "optimizer": "sgd",
            "loss": "mean_squared_error",
            "final_loss": final_loss,
        },
    }
    return save_version(model, output_dir / name, metadata)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--name", default="linear", help="model name (default: linear)")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("models"), help="model store root (default: models)"
    )
    parser.add_argument("--epochs", type=int, default=500, help="training epochs (default: 500)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    path = train(args.name, args.output_dir, args.epochs, args.seed)
    metadata = json.loads((path / "metadata.json").read_text())
    log.info(
        "saved %s (final loss %.3g after %d epochs)",
        path,
        metadata["training"]["final_loss"],
        args.epochs,
    )
    return 0
