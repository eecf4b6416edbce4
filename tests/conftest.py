"""Shared fixtures: one tiny trained model per session, the app and its client."""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import pytest

from app import create_app
from app.core.serving import input_monitor, serve_runner
from app.runtime.compiler import compile_version
from app.runtime.loader import load_version
from app.runtime.model import ModelRunner
from app.runtime.saved_models import load_model
from app.runtime.store import list_versions
from tests.models import SAVED_MODELS, ZOO, wide_output
from training.train import parse_args, train

# Enough epochs to move the weights, few enough to train in about a second.
TEST_EPOCHS = 20


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A model store ``<root>/linear/1`` holding a model trained for the tests."""
    root = tmp_path_factory.mktemp("models")
    train("linear", root, epochs=TEST_EPOCHS, seed=7)
    return root / "linear"


@pytest.fixture(scope="session")
def notebook_model_dir(tmp_path_factory) -> Path:
    """The store ``make train`` writes: the notebook's recipe, 500 epochs, seed 42."""
    root = tmp_path_factory.mktemp("notebook")
    arguments = parse_args([])
    train(arguments.name, root, epochs=arguments.epochs, seed=arguments.seed)
    return root / arguments.name


def multi_tensor_model() -> keras.Model:
    """Two inputs, two outputs: 3 features and a 2x2 grid in, 2 scores and a total out."""
    keras.utils.set_random_seed(3)
    features = keras.Input((3,), name="features")
    grid = keras.Input((2, 2), name="grid")
    hidden = keras.layers.Concatenate()([features, keras.layers.Flatten()(grid)])
    hidden = keras.layers.Dense(4, activation="tanh")(hidden)
    scores = keras.layers.Dense(2, name="scores")(hidden)
    total = keras.layers.Dense(1, name="total")(hidden)
    return keras.Model([features, grid], [scores, total])


@pytest.fixture(scope="session")
def multi_model_dir(tmp_path_factory) -> Path:
    """A model store ``<root>/multi/1`` with the two-input, two-output test model."""
    root = tmp_path_factory.mktemp("multi-models")
    save_version(multi_tensor_model(), root / "multi", 1)
    return root / "multi"


@dataclass(frozen=True)
class ZooModel:
    """A zoo model as Keras has it (a SavedModel: its signature, wrapped) and as the store
    holds it, saved and compiled."""

    name: str
    keras: keras.Model
    model_dir: Path


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict[str, ZooModel]:
    """Every zoo model (tests/models.py) saved as version 1 and compiled, once per session."""
    root = tmp_path_factory.mktemp("zoo")
    models = {}
    for name, build in {**ZOO, "wide_output": wide_output}.items():
        model = build()
        save_version(model, root / name, 1)
        models[name] = ZooModel(name, model, root / name)
    for name, write in SAVED_MODELS.items():
        version_dir = root / name / "1"
        write(version_dir)
        compile_version(version_dir)
        models[name] = ZooModel(name, load_model(version_dir), root / name)
    return models


def watched_runner(model_dir: Path) -> ModelRunner:
    """The newest version, built and its inputs watched as a worker does it."""
    runner = ModelRunner.build(load_version(list_versions(model_dir)[0]))
    runner.monitor = input_monitor(runner)
    return runner


def serving_app(model_dir: Path, runner: ModelRunner, **config):
    """An app in test mode (and ``config``) whose worker state serves ``runner``."""
    app = create_app({"TESTING": True, "MODEL_DIR": model_dir, **config})
    app.extensions["serving"].bundles = {runner.name: runner.bundle}
    serve_runner(app, runner)
    app.config.update(config)  # Over what serve_runner derives (the body limit).
    return app


@pytest.fixture(scope="session")
def multi_runner(multi_model_dir) -> ModelRunner:
    return watched_runner(multi_model_dir)


@pytest.fixture
def multi_app(multi_model_dir, multi_runner):
    """An app in test mode that serves the multi-tensor model."""
    return serving_app(multi_model_dir, multi_runner)


@pytest.fixture
def multi_keras(multi_runner) -> keras.Model:
    return keras.models.load_model(multi_runner.version.model_file, compile=False)


@pytest.fixture(scope="session")
def runner(model_dir) -> ModelRunner:
    """The session model, loaded and warmed up once, its inputs watched as a worker does."""
    return watched_runner(model_dir)


@pytest.fixture
def app(model_dir, runner):
    """An app in test mode that serves the session model."""
    return serving_app(model_dir, runner)


@pytest.fixture
def keras_model(runner) -> keras.Model:
    """The session model as Keras loads it, the reference for predictions."""
    return keras.models.load_model(runner.version.model_file, compile=False)


def save_version(
    model: keras.Model, model_dir: Path, version: int, filename="model.keras", compiled=True
):
    """Save ``model`` as ``model_dir/<version>/<filename>`` (any Keras format), compiled or not."""
    path = model_dir / str(version)
    path.mkdir(parents=True)
    with warnings.catch_warnings():
        # Keras warns that HDF5 is legacy; serving the notebook's .h5 is the point.
        warnings.simplefilter("ignore", UserWarning)
        model.save(path / filename)
    if compiled:
        compile_version(path)
    return path


def make_blocking(version_dir: Path) -> None:
    """Make loading ``version_dir`` block, as a hung network file system does.

    The compiled files are stat-ed and refused at once when they are not
    regular files, so the block is in the saved model that the loader
    converts when there is no artifact: a FIFO nobody writes to.
    """
    for name in ("model.tflite", "signature.json", "golden.npz", "metadata.json"):
        (version_dir / name).unlink(missing_ok=True)
    for model_file in version_dir.glob("*.keras"):
        model_file.unlink()
    os.mkfifo(version_dir / "model.keras")
