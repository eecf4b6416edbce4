"""The model runner: serves a compiled version through LiteRT and agrees with Keras."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from app.runtime.artifact import FLOAT32_MAX
from app.runtime.loader import load_version
from app.runtime.model import ModelLoadError, ModelRunner
from app.runtime.store import list_versions
from tests.conftest import save_version


def hidden_layer_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input(shape=(1,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )


def build(path) -> ModelRunner:
    return ModelRunner.build(load_version(list_versions(path.parent)[0]))


def random_inputs(size, seed=0):
    return np.random.default_rng(seed).uniform(-100, 100, size).astype(np.float32)


def test_predictions_agree_with_keras_to_float32_precision(runner, keras_model):
    inputs = random_inputs(257)
    expected = keras_model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-5)


def test_a_hidden_layer_with_an_activation_is_served_faithfully(tmp_path):
    model = hidden_layer_model()
    runner = build(save_version(model, tmp_path, 1))
    inputs = random_inputs(100, seed=2)
    expected = model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 999, 1000])
def test_one_prediction_per_instance_for_any_batch_size(runner, size):
    assert runner.predict(random_inputs(size)).shape == (size,)


def test_an_overflowing_prediction_is_never_a_number_at_the_float32_edge(runner):
    # LiteRT saturates where Keras gives inf; /predict refuses both (see not_finite).
    (prediction,) = runner.predict(np.array([FLOAT32_MAX], dtype=np.float32))
    assert not -FLOAT32_MAX < prediction < FLOAT32_MAX


def test_a_runtime_that_does_not_reproduce_the_golden_outputs_is_refused(runner):
    compiled = runner.compiled
    wrong = {name: values + 1 for name, values in compiled.golden_outputs.items()}
    tampered = replace(runner.bundle, compiled=replace(compiled, golden_outputs=wrong))
    with pytest.raises(ModelLoadError, match="does not reproduce the golden outputs"):
        ModelRunner.build(tampered)


def test_the_signature_is_published_with_minus_one_for_the_batch(runner):
    assert runner.compiled.signature() == {
        "inputs": [{"name": "x", "shape": [-1, 1], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [-1, 1], "dtype": "float32"}],
    }


def test_metadata_of_the_served_version_is_kept(runner):
    assert runner.metadata["training"]["epochs"] == 20
    assert runner.name == "linear" and runner.number == 1
    assert runner.load_seconds > 0 and runner.runtime == "litert"


def test_alternating_batch_sizes_give_the_same_answers(runner):
    single, batch = random_inputs(1, seed=5), random_inputs(1000, seed=6)
    first = (runner.predict(single), runner.predict(batch))
    second = (runner.predict(single), runner.predict(batch))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
