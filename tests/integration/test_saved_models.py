"""What a team saves, compiled by ``python -m training compile`` as a user runs it.

A real Keras 2 ``.h5`` written by tf_keras (installed in a directory of its
own, never in the served venv) is compiled and served by the real Gunicorn;
a custom layer compiles when its module is importable and is named when it
is not; a ``Lambda`` and unservable SavedModels are refused in one line.
SavedModels that serve are in the zoo (tests/models.py).
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.integration.conftest import start
from tests.models import APIS, outputs_from, request_for

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """``code`` run by the venv's Python in ``cwd``, with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def compile_cli(version_dir: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    """``python -m training compile version_dir`` as a user runs it, from ``cwd``."""
    env.setdefault("PYTHONPATH", str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "training", "compile", str(version_dir)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a failed compile printed (the test fails on anything more)."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def tf_keras_path(tmp_path_factory) -> Path:
    """tf_keras (Keras 2) for this TensorFlow, installed into a directory of its own."""
    target = tmp_path_factory.mktemp("tf_keras")
    major, minor = tf.__version__.split(".")[:2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            f"tf_keras=={major}.{minor}.*",
        ],
        check=True,
        timeout=300,
    )
    return target


def test_a_keras_2_h5_file_compiles_and_serves_what_keras_2_computes(
    tf_keras_path, tmp_path_factory
):
    store = tmp_path_factory.mktemp("keras2") / "churn"
    version = store / "1"
    version.mkdir(parents=True)
    built = run_python(
        f"""
        import numpy as np
        import tf_keras
        tf_keras.utils.set_random_seed(5)
        model = tf_keras.Sequential([
            tf_keras.Input((6,), name="features"),
            tf_keras.layers.Dense(16, activation="relu"),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.Dropout(0.2),
            tf_keras.layers.Dense(3, activation="softmax", name="churn"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy")
        rows = np.random.default_rng(0).normal(0, 3, (64, 6)).astype("float32")
        model.fit(rows, np.arange(64) % 3, epochs=2, verbose=0)
        model.save("{version}/my_best_model.h5")
        np.savez("{version.parent}/expected.npz", rows=rows[:4], outputs=model(rows[:4]).numpy())
        """,
        store,
        PYTHONPATH=str(tf_keras_path),
    )
    assert built.returncode == 0, built.stderr
    compiled = compile_cli(version, store)
    assert compiled.returncode == 0, compiled.stderr
    assert "model.tflite for LiteRT" in compiled.stdout
    expected = np.load(store / "expected.npz")
    server = start(store, tmp_path_factory)
    try:
        for api in APIS:
            path, body = request_for(api, "churn", {"features": expected["rows"]})
            answer = requests.post(f"{server.url}{path}", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            (output,) = outputs_from(api, answer.json(), [_spec("churn", (-1, 3))]).values()
            np.testing.assert_allclose(output, expected["outputs"], rtol=1e-3, atol=1e-6)
    finally:
        server.stop()


def _spec(name, shape):
    from app.runtime.artifact import TensorSpec

    return TensorSpec(name, shape, "float32")


def test_a_keras_2_custom_class_that_is_not_registered_is_named(tf_keras_path, tmp_path):
    version = tmp_path / "1"
    version.mkdir()
    built = run_python(
        f"""
        import tf_keras

        @tf_keras.utils.register_keras_serializable(package="team")
        class Twice(tf_keras.layers.Layer):
            def call(self, inputs):
                return inputs * 2

        features = tf_keras.Input((3,))
        tf_keras.Model(features, tf_keras.layers.Dense(1)(Twice()(features))).save(
            "{version}/model.h5"
        )
        """,
        tmp_path,
        PYTHONPATH=str(tf_keras_path),
    )
    assert built.returncode == 0, built.stderr
    line = refusal(compile_cli(version, tmp_path))
    assert "class 'team>Twice' is not found" in line
    assert "register_keras_serializable" in line


TEAM_MODULE = """
import keras


@keras.saving.register_keras_serializable(package="team")
class Gate(keras.layers.Layer):
    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs * keras.ops.sigmoid(inputs + self.bias)
"""


@pytest.fixture
def custom_version(tmp_path) -> Path:
    """A version using ``teamlib.layers.Gate``, a registered layer in the team's own package."""
    package = tmp_path / "src" / "teamlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text(TEAM_MODULE)
    version = tmp_path / "store" / "1"
    version.mkdir(parents=True)
    built = run_python(
        f"""
        import keras
        from teamlib.layers import Gate

        features = keras.Input((4,), name="features")
        model = keras.Model(features, keras.layers.Dense(2)(Gate()(features)))
        model.save("{version}/model.keras")
        """,
        tmp_path,
        PYTHONPATH=str(package.parent),
    )
    assert built.returncode == 0, built.stderr
    return version


def test_a_custom_layer_compiles_when_model_code_modules_names_its_package(
    custom_version, tmp_path
):
    path = os.pathsep.join([str(ROOT), str(tmp_path / "src")])
    result = compile_cli(custom_version, tmp_path, PYTHONPATH=path, MODEL_CODE_MODULES="teamlib")
    assert result.returncode == 0, result.stderr
    assert "compiled" in result.stdout


def test_a_custom_layer_whose_module_is_not_named_is_refused_naming_the_setting(
    custom_version, tmp_path
):
    # On the Python path, but neither installed nor named: a file does not choose what runs.
    path = os.pathsep.join([str(ROOT), str(tmp_path / "src")])
    line = refusal(compile_cli(custom_version, tmp_path, PYTHONPATH=path))
    assert "class 'team>Gate' names module 'teamlib.layers'" in line
    assert "MODEL_CODE_MODULES" in line


def test_a_custom_layer_whose_module_cannot_be_imported_is_named_in_one_line(
    custom_version, tmp_path
):
    line = refusal(compile_cli(custom_version, tmp_path, MODEL_CODE_MODULES="teamlib"))
    assert "class 'team>Gate' is not found" in line
    assert "module 'teamlib.layers' cannot be imported" in line
    assert "PYTHONPATH" in line


PAYLOAD = """
import pathlib

pathlib.Path({marker!r}).write_text("ran")

import keras


@keras.saving.register_keras_serializable(package="payload")
class Payload(keras.layers.Layer):
    def call(self, inputs):
        return inputs
"""


def test_a_module_in_the_model_store_is_never_imported_by_the_server(
    model_dir, tmp_path, make_server
):
    # The README's layout: the working directory, and so the store as namespace packages, on
    # the Python path. A model naming models.evil.1.payload must not run that file.
    marker = tmp_path / "payload-ran"
    root = tmp_path / "models"
    shutil.copytree(model_dir, root / "linear")
    version = root / "evil" / "1"
    version.mkdir(parents=True)
    (version / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    built = run_python(
        f"""
        import importlib, keras, os, sys

        sys.path.insert(0, {str(tmp_path)!r})
        module = importlib.import_module("models.evil.1.payload")
        os.remove({str(marker)!r})
        features = keras.Input((3,), name="x")
        model = keras.Model(features, keras.layers.Dense(1)(module.Payload()(features)))
        model.save("{version}/model.keras")
        """,
        tmp_path,
    )
    assert built.returncode == 0, built.stderr
    assert not marker.exists()
    server = make_server(None, MODEL_REPOSITORY=root, PYTHONPATH=str(tmp_path))
    listed = requests.post(f"{server.url}/v2/repository/index", timeout=10).json()
    states = {model["name"]: model for model in listed}
    assert states["linear"]["state"] == "READY"
    reason = states["evil"]["reason"]
    assert "class 'payload>Payload' names module 'models.evil.1.payload'" in reason
    assert "MODEL_CODE_MODULES" in reason
    assert not marker.exists(), "the server ran code from the model store"


FILE_READER = """
import tensorflow as tf


class Reader(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="path")])
    def serve(self, path):
        return {{"content": tf.map_fn(tf.io.read_file, path)}}


reader = Reader()
tf.saved_model.save(reader, {directory!r}, signatures={{"serving_default": reader.serve}})
"""


def test_a_saved_model_that_reads_files_is_refused_at_compile_naming_the_op(tmp_path):
    version = tmp_path / "1"
    built = run_python(FILE_READER.format(directory=str(version)), tmp_path)
    assert built.returncode == 0, built.stderr
    line = refusal(compile_cli(version, tmp_path))
    assert "runs the op ReadFile" in line and "ALLOWED_GRAPH_OPS" in line
    assert not (version / "signature.json").exists()


PRINTER = """
import tensorflow as tf


class Printer(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        tf.print("served", x)
        return {{"y": x * 2}}


printer = Printer()
tf.saved_model.save(printer, {directory!r}, signatures={{"serving_default": printer.serve}})
"""


def test_a_compiled_graph_with_a_denied_op_is_refused_at_load_naming_it(
    tmp_path, make_server, model_dir
):
    # Compiled where PrintV2 was allowed on purpose; served where it is not.
    store = tmp_path / "printer"
    built = run_python(PRINTER.format(directory=str(store / "1")), tmp_path)
    assert built.returncode == 0, built.stderr
    assert "runs the op PrintV2" in refusal(compile_cli(store / "1", tmp_path))
    compiled = compile_cli(store / "1", tmp_path, ALLOWED_GRAPH_OPS="PrintV2")
    assert compiled.returncode == 0, compiled.stderr
    root = tmp_path / "repository"
    shutil.copytree(store, root / "printer")
    shutil.copytree(model_dir, root / "linear")
    server = make_server(None, MODEL_REPOSITORY=root)
    listed = requests.post(f"{server.url}/v2/repository/index", timeout=10).json()
    reasons = {model["name"]: model.get("reason", model["state"]) for model in listed}
    assert reasons["linear"] == "READY"
    assert "runs the op PrintV2" in reasons["printer"], listed
    allowed = make_server(store, ALLOWED_GRAPH_OPS="PrintV2")
    answer = requests.post(f"{allowed.url}/predict", json={"instances": [1.5]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["predictions"] == [3.0]


REFUSING_GRAPH = """
import tensorflow as tf


class Groups(tf.Module):
    # Values in groups of 4: a length that is not a multiple of 4 is refused by the kernel.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def serve(self, x):
        grouped = tf.reshape(tf.math.cumprod(x, axis=1), [tf.shape(x)[0], -1, 4])
        return {{"y": tf.reduce_sum(grouped, axis=[1, 2])}}


groups = Groups()
tf.saved_model.save(groups, {directory!r}, signatures={{"serving_default": groups.serve}})
"""


def test_an_input_the_tensorflow_runtime_refuses_is_a_4xx_on_every_api(tmp_path, make_server):
    store = tmp_path / "groups"
    built = run_python(REFUSING_GRAPH.format(directory=str(store / "1")), tmp_path)
    assert built.returncode == 0, built.stderr
    compiled = compile_cli(store / "1", tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    server = make_server(store)
    refusal_text = "multiple of 4"
    v2 = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [0.5] * 6}]}
    answers = {
        "predict": requests.post(f"{server.url}/predict", json={"instances": [[0.5] * 6]}),
        "v1": requests.post(
            f"{server.url}/v1/models/groups:predict", json={"instances": [[0.5] * 6]}
        ),
        "v2": requests.post(f"{server.url}/v2/models/groups/infer", json=v2),
    }
    assert answers["predict"].status_code == 422, answers["predict"].text
    assert answers["v1"].status_code == 400 and answers["v2"].status_code == 400
    for answer in answers.values():
        assert "The model's runtime refused these inputs" in answer.text
        assert refusal_text in answer.text and "Traceback" not in answer.text
    fits = requests.post(f"{server.url}/predict", json={"instances": [[0.5] * 8]}, timeout=10)
    assert fits.status_code == 200, fits.text
    assert "Traceback" not in server.output()


def test_a_lambda_layer_is_refused_in_one_line_as_keras_safe_mode_does(tmp_path):
    version = tmp_path / "1"
    version.mkdir()
    built = run_python(
        f"""
        import keras
        features = keras.Input((3,))
        doubled = keras.layers.Lambda(lambda x: x * 2)(features)
        keras.Model(features, keras.layers.Dense(1)(doubled)).save("{version}/model.keras")
        """,
        tmp_path,
    )
    assert built.returncode == 0, built.stderr
    line = refusal(compile_cli(version, tmp_path))
    assert "a Lambda layer holds Python code, which Keras' safe mode refuses" in line


@pytest.mark.parametrize(
    ("saving", "expected"),
    [
        ("tf.saved_model.save(tf.Module(), DIR)", "no 'serving_default' signature to serve"),
        (
            "tf.saved_model.save(module, DIR, signatures={'a': module.fixed, 'b': module.fixed})",
            "(signatures: a, b)",
        ),
        (
            "tf.saved_model.save(module, DIR, signatures=module.fixed)",
            "input 'x' has shape (1, 3); the server needs a first dimension left open",
        ),
    ],
)
def test_a_saved_model_the_server_cannot_serve_is_refused_in_one_line(saving, expected, tmp_path):
    version = tmp_path / "1"
    built = run_python(
        f"""
        import tensorflow as tf

        class Fixed(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([1, 3], tf.float32, name="x")])
            def fixed(self, x):
                return {{"y": x * 2}}

        module = Fixed()
        DIR = "{version}"
        {saving}
        """,
        tmp_path,
    )
    assert built.returncode == 0, built.stderr
    assert expected in refusal(compile_cli(version, tmp_path))
