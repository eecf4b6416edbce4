"""The loader: the newest version that loads, each step in a child process with a deadline."""

import hashlib
import json
import os
import shutil

import keras
import pytest

from app.runtime import loader
from app.runtime import model as model_module
from app.runtime.limits import Limits
from app.runtime.loader import LoadTimeout, load_newest, load_version, run_with_deadline
from app.runtime.model import ModelLoadError
from app.runtime.store import list_versions
from app.runtime.version_policy import VersionPolicy
from tests.conftest import make_blocking, save_version


def linear_model(**input_options) -> keras.Model:
    return keras.Sequential([keras.Input(shape=(1,), **input_options), keras.layers.Dense(1)])


def only_version(path):
    return list_versions(path.parent)[0]


def test_the_newest_version_that_loads_is_served_and_failures_reported(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "model.keras").write_bytes(b"corrupt")
    bundle = load_newest(tmp_path, None, timeout=60)
    assert bundle.version.number == 1 and bundle.artifact_source == "compiled"
    assert len(bundle.skipped) == 1 and str(tmp_path / "2") in bundle.skipped[0]


def test_a_pinned_version_is_served_even_when_newer_ones_exist(tmp_path):
    for version in (1, 2):
        save_version(linear_model(), tmp_path, version)
    assert load_newest(tmp_path, 1, timeout=60).version.number == 1


def test_a_missing_pinned_version_is_a_load_error(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    with pytest.raises(ModelLoadError, match="MODEL_VERSION 5"):
        load_newest(tmp_path, 5, timeout=60)


def test_nothing_servable_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_newest(tmp_path / "absent", None, timeout=60)


def test_a_model_file_that_blocks_counts_as_not_loadable_after_the_deadline(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    save_version(linear_model(), tmp_path, 2)
    make_blocking(tmp_path / "2")
    bundle = load_newest(tmp_path, None, timeout=1)
    assert bundle.version.number == 1
    assert "MODEL_LOAD_TIMEOUT=1 s" in bundle.skipped[0]


def test_the_list_of_versions_that_do_not_load_is_bounded(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    for version in range(2, 32):
        (tmp_path / str(version)).mkdir()
    bundle = load_newest(tmp_path, None, timeout=60)
    assert bundle.version.number == 1
    assert (
        len(bundle.skipped) == 11 and bundle.skipped[-1] == "and 20 more versions that do not load"
    )


def test_the_notebooks_legacy_h5_file_is_converted_at_load(tmp_path):
    model = linear_model()
    bundle = load_version(only_version(save_version(model, tmp_path, 1, "my_best_model.h5", False)))
    assert bundle.artifact_source == "converted at load"


def test_without_tensorflow_an_uncompiled_version_says_how_to_compile_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "find_spec", lambda name: None)
    path = save_version(linear_model(), tmp_path, 1, compiled=False)
    with pytest.raises(ModelLoadError, match=f"python -m training compile {path}"):
        load_version(only_version(path))


@pytest.mark.parametrize(
    "make_model, reason",
    [
        (
            lambda: linear_model(dtype="bfloat16"),
            "is bfloat16; tensors of bool, int8, .* are served",
        ),
    ],
    ids=["bfloat16-input"],
)
def test_a_model_the_api_cannot_serve_exactly_is_refused_with_the_reason(
    tmp_path, make_model, reason
):
    path = save_version(make_model(), tmp_path, 1, compiled=False)
    with pytest.raises(ModelLoadError, match=reason):
        load_version(only_version(path))


def string_model() -> keras.Model:
    inputs = keras.Input((1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(lookup))


def test_a_model_litert_cannot_run_loads_on_the_tensorflow_runtime(tmp_path):
    path = save_version(string_model(), tmp_path, 1, compiled=False)
    bundle = load_version(only_version(path))
    assert bundle.compiled.runtime == "tensorflow" and "string" in bundle.compiled.why
    assert bundle.artifact_source == "converted at load"


def test_without_tensorflow_its_runtimes_versions_are_refused_naming_the_extra(
    tmp_path, monkeypatch
):
    path = save_version(string_model(), tmp_path, 1)
    monkeypatch.setattr(model_module, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as refused:
        load_version(only_version(path))
    (line,) = str(refused.value).splitlines()
    assert "needs the TensorFlow runtime" in line and "model-server[tensorflow]" in line


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04truncated zip"])
def test_a_corrupt_model_file_is_a_load_error_naming_the_path(tmp_path, content):
    path = tmp_path / "1"
    path.mkdir()
    (path / "model.keras").write_bytes(content)
    with pytest.raises(ModelLoadError, match=str(path)):
        load_version(only_version(path))


def test_a_tampered_flatbuffer_fails_its_checksum(tmp_path):
    path = save_version(linear_model(), tmp_path, 1)
    (path / "model.tflite").write_bytes((path / "model.tflite").read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_version(only_version(path))


def test_a_step_past_its_deadline_is_killed_and_reported():
    with pytest.raises(LoadTimeout, match="MODEL_LOAD_TIMEOUT=0.2 s"):
        run_with_deadline(__import__("time").sleep, 0.2, 5)


def test_a_step_returns_its_result_or_its_error_from_the_child():
    assert run_with_deadline(sum, 10, [1, 2]) == 3
    with pytest.raises(ModelLoadError, match="ZeroDivisionError"):
        run_with_deadline(divmod, 10, 1, 0)


def test_a_compiled_file_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    path = save_version(linear_model(), tmp_path, 1)
    (path / "model.tflite").unlink()
    os.mkfifo(path / "model.tflite")  # Opening it would block: it is never opened.
    with pytest.raises(ModelLoadError, match="model.tflite is not a regular file"):
        load_version(only_version(path))


def test_a_flatbuffer_of_another_size_than_signed_is_refused_before_it_is_read(tmp_path):
    path = save_version(linear_model(), tmp_path, 1)
    with open(path / "model.tflite", "ab") as file:
        file.truncate(100 * 1024**2)  # 100 MiB of zeros, sparse: nothing is written or read.
    with pytest.raises(ModelLoadError, match="the signature says"):
        load_version(only_version(path))


def test_a_padded_flatbuffer_with_updated_checksums_is_refused_over_max_model_bytes(tmp_path):
    path = save_version(linear_model(), tmp_path, 1)
    flatbuffer = path / "model.tflite"
    with open(flatbuffer, "ab") as file:
        file.write(b"\0" * 100_000)
    signature = json.loads((path / "signature.json").read_text())
    signature["flatbuffer"]["bytes"] = flatbuffer.stat().st_size
    signature["flatbuffer"]["sha256"] = hashlib.sha256(flatbuffer.read_bytes()).hexdigest()
    (path / "signature.json").write_text(json.dumps(signature))
    with pytest.raises(ModelLoadError, match="over the MAX_MODEL_BYTES limit of 50,000"):
        load_version(only_version(path), Limits(max_model_bytes=50_000))


@pytest.mark.parametrize("name", ["../1/model.keras", "/etc/hostname", "..", "sub/dir"])
def test_metadata_may_list_only_plain_file_names_in_the_version(tmp_path, name):
    path = save_version(linear_model(), tmp_path, 1)
    (path / "metadata.json").write_text(json.dumps({"artifacts": {name: "0" * 64}}))
    with pytest.raises(ModelLoadError, match="not a file name"):
        load_version(only_version(path))


@pytest.mark.parametrize(
    "profile",
    [
        {"x": {"min": 0, "max": 1, "upper_bounds": [1, 0], "fractions": [0, 1, 0]}},
        {"x": {"min": 0, "max": 1, "upper_bounds": [0, 1], "fractions": [1.0]}},
        {"x": {"min": 0, "max": 1, "upper_bounds": [0, float("nan")], "fractions": [0, 1, 0]}},
        {"x": {"min": "low", "max": 1, "upper_bounds": [0, 1], "fractions": [0, 1, 0]}},
        {"x": {"max": 1, "upper_bounds": [0, 1], "fractions": [0, 1, 0]}},
        {"x": {"min": 0, "max": 1, "upper_bounds": list(range(101)), "fractions": [0] * 102}},
        ["not", "an", "object"],
    ],
)
def test_a_version_whose_input_profile_a_worker_could_not_watch_is_refused_by_the_loader(
    tmp_path, profile
):
    path = save_version(linear_model(name="x"), tmp_path, 1)
    (path / "metadata.json").write_text(json.dumps({"input_profile": profile}))
    with pytest.raises(ModelLoadError, match="input profile|input_profile"):
        load_version(only_version(path))


def test_a_model_whose_one_instance_exceeds_max_tensor_elements_is_refused(tmp_path):
    path = save_version(linear_model(), tmp_path, 1)
    with pytest.raises(ModelLoadError, match="MAX_TENSOR_ELEMENTS"):
        load_version(only_version(path), Limits(max_tensor_elements=0))


def test_the_largest_batch_is_what_a_request_can_carry(zoo):
    bundle = load_version(only_version(zoo["mobilenet"].model_dir / "1"))
    assert bundle.max_batch == 1024 * 1024 // (224 * 224 * 3) == 6
    assert bundle.max_body_bytes == 32 * 224 * 224 * 3


def test_an_ambiguous_version_is_skipped_with_the_reason_and_every_failure_counted(tmp_path):
    save_version(linear_model(), tmp_path, 1)
    for name in ("2", "02", *(str(n) for n in range(3, 12))):
        (tmp_path / name).mkdir()
    bundle = load_newest(tmp_path, None, timeout=60)
    assert bundle.version.number == 1
    assert (
        bundle.failure_count == 11 and bundle.skipped[-1] == "and 1 more versions that do not load"
    )
    assert any("both name version 2" in message for message in bundle.skipped)


def test_a_repository_loads_every_model_and_keeps_each_failure_to_its_own(model_dir, tmp_path):
    for name in ("a", "b", "c"):
        shutil.copytree(model_dir, tmp_path / name)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "metadata.json").write_text("not JSON")
    make_blocking(tmp_path / "c" / "1")  # Hangs as on a dead file system: past its deadline.
    bundles, failed, ignored = loader.load_repository(tmp_path, 10, timeout=2)
    assert sorted(bundles) == ["a", "b"] and ignored == []
    assert bundles["a"].version.name == "a" and bundles["a"].version.number == 1
    assert "unreadable metadata" in str(failed["broken"])
    assert "MODEL_LOAD_TIMEOUT" in str(failed["c"])
    with pytest.raises(ModelLoadError, match="over MAX_MODELS=3"):
        loader.load_repository(tmp_path, 3, timeout=2)


def test_a_repository_loads_only_the_models_named(model_dir, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(model_dir, tmp_path / name)
    bundles, failed, _ = loader.load_repository(tmp_path, 10, timeout=30, names={"b", "gone"})
    assert sorted(bundles) == ["b"]
    assert "not in the repository" in str(failed["gone"])


def test_a_latest_policy_serves_the_newest_versions_that_load(tmp_path):
    for version in (1, 2, 4):
        save_version(linear_model(), tmp_path, version)
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "model.keras").write_bytes(b"corrupt")
    bundle = load_newest(tmp_path, None, timeout=60, policy=VersionPolicy(latest=2))
    assert [served.version.number for served in bundle.served] == [4, 2]
    assert bundle.failure_count == 1 and str(tmp_path / "3") in bundle.skipped[0]
    assert bundle.size_bytes == sum(served.compiled.size_bytes for served in bundle.served)


def test_a_specific_policy_serves_the_versions_it_names_and_says_which_are_missing(tmp_path):
    for version in (1, 2, 3):
        save_version(linear_model(), tmp_path, version)
    bundle = load_newest(tmp_path, None, timeout=60, policy=VersionPolicy(specific=(7, 3, 1)))
    assert [served.version.number for served in bundle.served] == [3, 1]
    assert bundle.skipped == [f"{tmp_path}: version 7 not found"]
    with pytest.raises(ModelLoadError, match="version 9 not found"):
        load_newest(tmp_path, None, timeout=60, policy=VersionPolicy(specific=(9,)))


def test_a_repository_takes_each_models_policy_from_its_file(model_dir, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(model_dir, tmp_path / name)
        shutil.copytree(model_dir / "1", tmp_path / name / "2")
    (tmp_path / "version_policy.json").write_text('{"a": {"latest": 2}}')
    bundles, failed, _ = loader.load_repository(tmp_path, 10, timeout=30)
    assert [served.version.number for served in bundles["a"].served] == [2, 1]
    assert [served.version.number for served in bundles["b"].served] == [2]
    (tmp_path / "version_policy.json").write_text('{"a": {"latest": 0}}')
    with pytest.raises(ModelLoadError, match="'a': latest must be 1 to MAX_SERVED_VERSIONS"):
        loader.load_repository(tmp_path, 10, timeout=30)
