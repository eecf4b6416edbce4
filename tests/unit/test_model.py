"""The model runner: loads any one-input, one-output Keras model and agrees with Keras."""

import keras
import numpy as np
import pytest

from app.model import LiteRTRuntime, ModelLoadError, ModelRunner, load_newest
from app.store import list_versions
from tests.conftest import save_version


def linear_model() -> keras.Model:
    return keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])


def hidden_layer_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input(shape=(1,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )


def load(path) -> ModelRunner:
    return ModelRunner.load(list_versions(path.parent)[0])


def random_inputs(size, seed=0):
    return np.random.default_rng(seed).uniform(-100, 100, size).astype(np.float32)


def test_predictions_agree_with_keras_to_float32_precision(runner, keras_model):
    inputs = random_inputs(257)
    expected = keras_model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-5)


def test_a_hidden_layer_with_an_activation_is_served_faithfully(tmp_path):
    model = hidden_layer_model()
    runner = load(save_version(model, tmp_path, 1))
    inputs = random_inputs(100, seed=2)
    expected = model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-6)


def test_the_notebooks_legacy_h5_file_is_served(tmp_path):
    model = hidden_layer_model()
    runner = load(save_version(model, tmp_path, 1, filename="my_best_model.h5"))
    inputs = random_inputs(10)
    expected = model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 999, 1000])
def test_one_prediction_per_instance_for_any_batch_size(runner, size):
    assert runner.predict(random_inputs(size)).shape == (size,)


def test_a_model_with_two_input_features_is_refused(tmp_path):
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    with pytest.raises(ModelLoadError, match="single numeric input"):
        load(save_version(model, tmp_path, 1))


def test_a_model_with_two_outputs_is_refused(tmp_path):
    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(2)])
    with pytest.raises(ModelLoadError, match="single numeric output"):
        load(save_version(model, tmp_path, 1))


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04truncated zip"])
def test_a_corrupt_model_file_is_a_load_error_naming_the_path(tmp_path, content):
    path = tmp_path / "1"
    path.mkdir()
    (path / "model.keras").write_bytes(content)
    with pytest.raises(ModelLoadError, match=str(path)):
        load(path)


def test_the_newest_version_that_loads_is_served_and_failures_reported(tmp_path, runner):
    save_version(linear_model(), tmp_path, 1)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "model.keras").write_bytes(b"corrupt")
    served, skipped = load_newest(tmp_path)
    assert served.number == 1
    assert len(skipped) == 1 and "2" in skipped[0]


def test_a_pinned_version_is_served_even_when_newer_ones_exist(tmp_path):
    for version in (1, 2):
        save_version(linear_model(), tmp_path, version)
    served, _ = load_newest(tmp_path, pinned_version=1)
    assert served.number == 1


def test_a_missing_pinned_version_is_a_load_error(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    with pytest.raises(ModelLoadError, match="MODEL_VERSION 5"):
        load_newest(tmp_path, pinned_version=5)


def test_nothing_servable_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_newest(tmp_path / "absent")


def test_metadata_of_the_served_version_is_kept(runner):
    assert runner.metadata["training"]["epochs"] == 20
    assert runner.name == "linear" and runner.number == 1
    assert runner.load_seconds > 0


def test_the_fast_litert_runtime_serves_when_it_agrees_with_tensorflow(runner):
    assert runner.runtime == "litert"


def test_tensorflow_serves_when_litert_disagrees(tmp_path, monkeypatch):
    monkeypatch.setattr(LiteRTRuntime, "__call__", lambda self, batch: np.zeros_like(batch))
    model = hidden_layer_model()
    runner = load(save_version(model, tmp_path, 1))
    assert runner.runtime == "tensorflow"
    inputs = random_inputs(50)
    expected = model.predict(inputs.reshape(-1, 1), verbose=0).reshape(-1)
    np.testing.assert_allclose(runner.predict(inputs), expected, rtol=1e-6, atol=1e-6)


def test_tensorflow_serves_when_litert_cannot_convert(tmp_path, monkeypatch):
    def refuse(self, reference):
        raise RuntimeError("converter failed")

    monkeypatch.setattr(LiteRTRuntime, "__init__", refuse)
    assert load(save_version(linear_model(), tmp_path, 1)).runtime == "tensorflow"


def test_alternating_batch_sizes_give_the_same_answers(runner):
    single, batch = random_inputs(1, seed=5), random_inputs(1000, seed=6)
    first = (runner.predict(single), runner.predict(batch))
    second = (runner.predict(single), runner.predict(batch))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
