"""Training: reproducible, versioned, with metadata."""

import json

import keras
import numpy as np
import pytest

from training.train import XS, YS, data_hash, main, parse_args, train


def weights(path):
    return [w.tolist() for w in keras.models.load_model(path / "model.keras").get_weights()]


def test_two_runs_with_the_same_seed_give_identical_weights(tmp_path):
    first = train("m", tmp_path / "a", epochs=5, seed=3)
    second = train("m", tmp_path / "b", epochs=5, seed=3)
    assert weights(first) == weights(second)


def test_a_different_seed_gives_different_weights(tmp_path):
    assert weights(train("m", tmp_path, epochs=5, seed=1)) != weights(
        train("m", tmp_path, epochs=5, seed=2)
    )


def test_each_run_writes_the_next_version_beside_the_last(tmp_path):
    assert train("m", tmp_path, epochs=1, seed=0) == tmp_path / "m" / "1"
    assert train("m", tmp_path, epochs=1, seed=0) == tmp_path / "m" / "2"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]


def test_metadata_records_what_training_did(tmp_path):
    path = train("m", tmp_path, epochs=3, seed=9)
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["version"] == 1
    assert metadata["name"] == "m"
    assert metadata["framework"]["tensorflow"]
    assert metadata["framework"]["keras"] == keras.__version__
    assert metadata["training"]["epochs"] == 3
    assert metadata["training"]["seed"] == 9
    assert metadata["training"]["data_sha256"] == data_hash(XS.reshape(-1, 1), YS.reshape(-1, 1))
    assert np.isfinite(metadata["training"]["final_loss"])
    assert metadata["created"].endswith("+00:00")


def test_the_notebook_recipe_learns_y_equals_3x_plus_1(tmp_path):
    path = train("m", tmp_path, epochs=500, seed=42)
    model = keras.models.load_model(path / "model.keras")
    assert model.predict(np.array([[10.0]]), verbose=0)[0, 0] == pytest.approx(31.0, abs=0.1)


def test_cli_options_choose_name_directory_epochs_and_seed(tmp_path):
    assert main(["--name", "x", "--output-dir", str(tmp_path), "--epochs", "2", "--seed", "5"]) == 0
    metadata = json.loads((tmp_path / "x" / "1" / "metadata.json").read_text())
    assert (metadata["training"]["epochs"], metadata["training"]["seed"]) == (2, 5)


def test_cli_refuses_zero_epochs():
    with pytest.raises(SystemExit):
        parse_args(["--epochs", "0"])
