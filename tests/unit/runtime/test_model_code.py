"""What a model file may make the server run: modules by policy, graph ops by the deny-list."""

import pytest

from app.runtime.graph_ops import denied
from app.runtime.model_code import CodePolicy, import_recorded, installed


@pytest.mark.parametrize(
    ("environ", "modules", "ops"),
    [
        ({}, (), frozenset()),
        (
            {"MODEL_CODE_MODULES": " teamlib , acme.layers,"},
            ("teamlib", "acme.layers"),
            frozenset(),
        ),
        ({"ALLOWED_GRAPH_OPS": "PrintV2,ReadFile"}, (), frozenset({"PrintV2", "ReadFile"})),
    ],
)
def test_the_settings_name_modules_and_ops(environ, modules, ops):
    policy = CodePolicy.from_environ(environ)
    assert policy.modules == modules and policy.graph_ops == ops


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("MODEL_CODE_MODULES", "team lib"),
        ("MODEL_CODE_MODULES", "../x"),
        ("ALLOWED_GRAPH_OPS", "a.b"),
    ],
)
def test_a_setting_entry_that_is_not_a_name_is_refused_naming_it(setting, value):
    with pytest.raises(ValueError, match=setting):
        CodePolicy.from_environ({setting: value})


def test_a_named_package_covers_its_submodules_only():
    policy = CodePolicy(modules=("teamlib",))
    assert policy.names("teamlib") and policy.names("teamlib.layers")
    assert not policy.names("teamlibx.layers") and not policy.names("other")


def test_only_regular_packages_in_site_packages_count_as_installed():
    assert installed("keras.src.layers") and installed("numpy")
    # The project's own tests are on the path (the working directory), not installed.
    assert not installed("tests.custom_layers")
    assert not installed("models.evil.1.payload") and not installed("no_such_module_anywhere")


def test_a_module_neither_installed_nor_named_is_refused_and_never_imported(tmp_path, monkeypatch):
    package = tmp_path / "outsider"
    package.mkdir()
    marker = tmp_path / "ran"
    (package / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    refused = import_recorded([("x>Layer", "outsider.layers")], CodePolicy())
    assert "'outsider.layers', which is neither an installed package" in refused
    assert "MODEL_CODE_MODULES" in refused and not marker.exists()
    assert import_recorded([("x>Layer", "outsider")], CodePolicy(modules=("outsider",))) is None
    assert marker.exists()


@pytest.mark.parametrize(
    "op",
    [
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "PyFunc",
        "EagerPyFunc",
        "PrintV2",
        "SaveV2",
        "RestoreV2",
        "TFRecordDatasetV2",
        "WholeFileReaderV2",
        "WriteScalarSummary",
        "DebugIdentityV3",
        "CollectiveReduceV2",
        "InitializeTableFromTextFileV2",
        "ImmutableConst",
    ],
)
def test_ops_that_reach_outside_the_process_are_denied_unless_allowed(op):
    assert denied(op)
    assert not denied(op, frozenset({op}))


@pytest.mark.parametrize(
    "op",
    [
        "MatMul",
        "BiasAdd",
        "While",
        "StatefulPartitionedCall",
        "LookupTableFindV2",
        "Cumprod",
        "StringSplitV2",
        "TensorListReserve",
        "ReadVariableOp",
        "VarHandleOp",
        "Softmax",
    ],
)
def test_the_ops_keras_graphs_use_are_allowed(op):
    assert not denied(op)
