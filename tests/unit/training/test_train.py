"""Training: reproducible, versioned, with its lineage; the data file checked first."""

import json

import keras
import numpy as np
import pytest

from training.data import DEFAULT_DATA, DataError, load, sha256
from training.train import git_state, main, parse_args, train
from training.version import ARTIFACT_FILES, sha256_file


def weights(path):
    return [w.tolist() for w in keras.models.load_model(path / "model.keras").get_weights()]


def test_two_runs_with_the_same_seed_give_identical_weights(tmp_path):
    first = train("m", tmp_path / "a", epochs=5, seed=3).path
    second = train("m", tmp_path / "b", epochs=5, seed=3).path
    assert weights(first) == weights(second)


def test_a_different_seed_gives_different_weights(tmp_path):
    assert weights(train("m", tmp_path, epochs=5, seed=1).path) != weights(
        train("m", tmp_path, epochs=5, seed=2).path
    )


def test_each_run_writes_the_next_version_beside_the_last(tmp_path):
    assert train("m", tmp_path, epochs=1, seed=0).path == tmp_path / "m" / "1"
    assert train("m", tmp_path, epochs=1, seed=0).path == tmp_path / "m" / "2"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]


def test_metadata_records_the_lineage_of_the_version(tmp_path):
    run = train("m", tmp_path, epochs=3, seed=9)
    metadata = json.loads((run.path / "metadata.json").read_text())
    assert metadata["version"] == 1 and metadata["name"] == "m"
    assert metadata["framework"]["keras"] == keras.__version__
    assert metadata["code"] == git_state() and len(metadata["code"]["commit"]) == 40
    assert metadata["data"] == {
        "path": str(DEFAULT_DATA),
        "rows": 6,
        "sha256": sha256(DEFAULT_DATA),
    }
    training = metadata["training"]
    assert (training["epochs"], training["seed"], training["optimizer"]) == (3, 9, "sgd")
    assert training["final_loss"] == run.losses[-1] and len(run.losses) == 3
    assert metadata["saved_to"] == str(run.path.resolve())
    assert metadata["artifacts"] == {name: sha256_file(run.path / name) for name in ARTIFACT_FILES}
    assert metadata["created"].endswith("+00:00")


def test_the_notebook_recipe_learns_y_equals_3x_plus_1(tmp_path):
    path = train("m", tmp_path, epochs=500, seed=42).path
    model = keras.models.load_model(path / "model.keras")
    assert model.predict(np.array([[10.0]]), verbose=0)[0, 0] == pytest.approx(31.0, abs=0.1)


def test_the_data_file_holds_the_notebooks_points():
    xs, ys = load(DEFAULT_DATA)
    assert xs.reshape(-1).tolist() == [-1, 0, 1, 2, 3, 4]
    assert ys.reshape(-1).tolist() == [-2, 1, 4, 7, 10, 13]


@pytest.mark.parametrize(
    "content, message",
    [
        ("x\n1\n2\n", "missing column 'y'"),
        ("x,y\n1,2\n2,abc\n", "row 3, column 'y': 'abc' is not a number"),
        ("x,y\n1,2\nnan,4\n", "row 3, column 'x': 'nan' is not finite"),
        ("x,y\n1,2\n", "1 data rows; at least 2 are needed"),
        ("x,y\n1,2\n3,\n", "row 3, column 'y': '' is not a number"),
    ],
    ids=["missing-column", "string-cell", "nan", "one-row", "empty-cell"],
)
def test_a_bad_data_file_is_refused_naming_row_and_column(tmp_path, content, message):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load(path)


def test_the_cli_refuses_bad_data_with_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n2,abc\n")
    assert main(["--data", str(bad), "--output-dir", str(tmp_path / "out"), "--epochs", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("cannot train:") and "row 3, column 'y'" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_cli_options_choose_name_directory_data_epochs_and_seed(tmp_path):
    data = tmp_path / "points.csv"
    data.write_text("x,y\n0,1\n1,3\n2,5\n")
    argv = ["--name", "x", "--output-dir", str(tmp_path), "--epochs", "2", "--seed", "5"]
    assert main([*argv, "--data", str(data)]) == 0
    metadata = json.loads((tmp_path / "x" / "1" / "metadata.json").read_text())
    assert (metadata["training"]["epochs"], metadata["training"]["seed"]) == (2, 5)
    assert metadata["data"]["path"] == str(data) and metadata["data"]["rows"] == 3


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--alias", "production"]])
def test_cli_refuses_nonsense(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_register_without_a_tracking_uri_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--register", "--output-dir", str(tmp_path), "--epochs", "1"]) == 2
    assert "MLFLOW_TRACKING_URI" in capsys.readouterr().err
