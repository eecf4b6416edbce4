"""The model store: versions, model files, metadata."""

import os

import pytest

from app.runtime.store import (
    StoreError,
    fingerprint,
    list_models,
    list_versions,
    next_version_number,
)


def make_version(root, name, files=("model.keras",)):
    path = root / name
    path.mkdir(parents=True)
    for filename in files:
        (path / filename).parent.mkdir(parents=True, exist_ok=True)
        (path / filename).write_text("x")
    return path


def test_versions_are_listed_newest_first_by_number_not_by_name(tmp_path):
    for name in ("2", "10", "1"):
        make_version(tmp_path, name)
    assert [v.number for v in list_versions(tmp_path)] == [10, 2, 1]


def test_directories_that_are_not_integers_are_ignored(tmp_path):
    make_version(tmp_path, "3")
    make_version(tmp_path, ".4.partial")
    make_version(tmp_path, "latest")
    (tmp_path / "5").write_text("a file, not a directory")
    assert [v.number for v in list_versions(tmp_path)] == [3]


def test_the_model_name_is_the_directory_name(tmp_path):
    make_version(tmp_path / "linear", "1")
    assert list_versions(tmp_path / "linear")[0].name == "linear"


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_a_store_without_versions_is_an_error_naming_the_path(tmp_path, setup):
    model_dir = tmp_path / "models"
    if setup == "empty":
        model_dir.mkdir()
    with pytest.raises(StoreError, match=str(model_dir)):
        list_versions(model_dir)


def test_native_keras_file_is_preferred_over_legacy_h5(tmp_path):
    make_version(tmp_path, "1", files=("my_best_model.h5", "model.keras"))
    assert list_versions(tmp_path)[0].model_file.name == "model.keras"


def test_legacy_h5_file_is_found(tmp_path):
    make_version(tmp_path, "1", files=("my_best_model.h5",))
    assert list_versions(tmp_path)[0].model_file.name == "my_best_model.h5"


@pytest.mark.parametrize(
    "files, found",
    [
        (("saved_model.pb", "variables/variables.index"), "1"),
        (("export/saved_model.pb", "compiled_savedmodel/saved_model.pb"), "export"),
        (("model.keras", "saved_model.pb"), "model.keras"),
    ],
)
def test_a_saved_model_is_found_in_the_version_or_a_folder_of_it(tmp_path, files, found):
    make_version(tmp_path, "1", files=files)
    assert list_versions(tmp_path)[0].model_file.name == found


def test_the_compiled_runtime_copy_is_not_taken_for_the_saved_model(tmp_path):
    make_version(tmp_path, "1", files=("compiled_savedmodel/saved_model.pb",))
    with pytest.raises(StoreError, match="no model"):
        _ = list_versions(tmp_path)[0].model_file


def test_a_version_without_a_model_file_is_an_error(tmp_path):
    make_version(tmp_path, "1", files=("notes.txt",))
    with pytest.raises(StoreError, match=r"no model \(\*.keras, \*.h5 or a SavedModel"):
        _ = list_versions(tmp_path)[0].model_file


def test_metadata_is_read_and_optional(tmp_path):
    make_version(tmp_path, "1", files=("model.keras",))
    make_version(tmp_path, "2", files=("model.keras",))
    (tmp_path / "2" / "metadata.json").write_text('{"epochs": 3}')
    newest, oldest = list_versions(tmp_path)
    assert newest.read_metadata() == {"epochs": 3}
    assert oldest.read_metadata() == {}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unreadable_metadata_is_an_error(tmp_path, content):
    make_version(tmp_path, "1", files=("model.keras",))
    (tmp_path / "1" / "metadata.json").write_text(content)
    with pytest.raises(StoreError, match="metadata"):
        list_versions(tmp_path)[0].read_metadata()


def test_next_version_number_starts_at_one_and_follows_the_highest(tmp_path):
    assert next_version_number(tmp_path / "new") == 1
    make_version(tmp_path, "7")
    assert next_version_number(tmp_path) == 8


def test_two_directories_for_one_version_are_both_listed_with_the_ambiguity(tmp_path):
    for name in ("1", "01", "2"):
        make_version(tmp_path, name)
    versions = list_versions(tmp_path)
    assert [(v.path.name, v.problem is None) for v in versions] == [
        ("2", True),
        ("01", False),
        ("1", False),
    ]
    assert "01 and 1 both name version 1" in versions[1].problem


def test_a_version_beyond_int64_is_listed_with_the_reason(tmp_path):
    make_version(tmp_path, str(2**64))
    (version,) = list_versions(tmp_path)
    assert "2^63 - 1" in version.problem


def test_a_symlinked_model_dir_keeps_the_name_it_is_given(tmp_path):
    make_version(tmp_path / "releases" / "blue", "1")
    (tmp_path / "linear").symlink_to(tmp_path / "releases" / "blue")
    assert list_versions(tmp_path / "linear")[0].name == "linear"
    assert list_versions(tmp_path / "linear", "churn")[0].name == "churn"


def test_metadata_nested_too_deeply_is_an_error(tmp_path):
    path = make_version(tmp_path, "1")
    (path / "metadata.json").write_text('{"a": ' * 300 + "1" + "}" * 300)
    with pytest.raises(StoreError, match="nested over 32 levels"):
        list_versions(tmp_path)[0].read_metadata()


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_metadata_that_is_not_a_regular_file_is_an_error_without_reading_it(tmp_path, kind):
    path = make_version(tmp_path, "1")
    if kind == "fifo":
        os.mkfifo(path / "metadata.json")
    else:
        (path / "metadata.json").mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        list_versions(tmp_path)[0].read_metadata()


def test_a_repository_lists_each_model_directory_by_name(tmp_path):
    for name in ("b", "a", ".cache", "bad name", "ok-1.2_x"):
        make_version(tmp_path / name, "1")
    (tmp_path / "notes.txt").write_text("a file, not a model")
    models, ignored = list_models(tmp_path, max_models=10)
    assert models == {name: tmp_path / name for name in ("a", "b", "ok-1.2_x")}
    assert ignored == ["'bad name'"]


def test_a_repository_over_max_models_or_missing_is_refused(tmp_path):
    for name in ("a", "b", "c"):
        make_version(tmp_path / name, "1")
    with pytest.raises(StoreError, match="3 models, over MAX_MODELS=2"):
        list_models(tmp_path, max_models=2)
    with pytest.raises(StoreError, match="does not exist"):
        list_models(tmp_path / "nothing", max_models=2)


def test_a_repository_fingerprint_changes_with_its_models_and_ignores_hidden_work(tmp_path):
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "1" / "model.tflite").write_bytes(b"x")
    before = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == before
    (tmp_path / "a" / ".2.partial").mkdir()
    (tmp_path / "a" / ".2.partial" / "model.tflite").write_bytes(b"y")
    assert fingerprint(tmp_path) == before
    (tmp_path / "a" / ".2.partial").rename(tmp_path / "a" / "2")
    assert fingerprint(tmp_path) != before
    after = fingerprint(tmp_path)
    (tmp_path / "registry.json").write_text("{}")
    assert fingerprint(tmp_path) != after
