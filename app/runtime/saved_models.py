"""Read what a team saves as a Keras model, for the compiler (needs TensorFlow).

A ``.keras`` file, a Keras 2 ``.h5`` file, or a SavedModel directory
(``model.export()``, ``tf.saved_model.save``: TensorFlow Serving's format),
whose serving signature is wrapped in a Keras model with one input per
signature argument. Custom classes a Keras file names are found by importing
the module Keras recorded for them, when it is an installed package or
``MODEL_CODE_MODULES`` names it (app/runtime/model_code.py); a SavedModel's
graph is checked for ops that reach outside the process before anything
runs it (app/runtime/graph_ops.py). Every failure is one ``ArtifactError``
line that names the cause: the class that cannot be found, the module that
may not be imported, the ``Lambda`` that Keras' safe mode refuses, the op
refused, the signature that is missing.
"""

import json
import re
import warnings
import zipfile
from importlib.util import find_spec
from pathlib import Path

import keras
import tensorflow as tf

from app.runtime.artifact import ArtifactError
from app.runtime.graph_ops import first_denied
from app.runtime.model_code import INSTALLED_ONLY, CodePolicy, import_recorded

# The signature served from a SavedModel, as in TensorFlow Serving.
SERVING_SIGNATURE = "serving_default"
# Module prefixes whose classes Keras resolves itself.
KERAS_MODULES = ("keras", "tf_keras", "builtins", "keras_hub", "keras_cv", "keras_nlp")
# A model's config is read whole; Keras' own configs are kilobytes to a few MiB.
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def load_model(path: Path, policy: CodePolicy = INSTALLED_ONLY) -> keras.Model:
    """The Keras model saved at ``path`` (a file or a SavedModel directory), its code and
    ops as ``policy`` allows."""
    if path.is_dir():
        return saved_model_as_keras(path, policy)
    custom = custom_classes(recorded_config(path))
    refused = import_recorded(custom, policy)
    if refused:
        raise ArtifactError(f"{path.name}: {refused}")
    try:
        with warnings.catch_warnings():
            # Keras warns that HDF5 is legacy; the notebook's .h5 is what we have.
            warnings.simplefilter("ignore", UserWarning)
            return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file.
        problem = load_problem(error, custom)
        raise ArtifactError(f"{path.name}: cannot load model ({problem})") from None


def recorded_config(path: Path) -> dict:
    """The model config a ``.keras`` or ``.h5`` file records, or {} when it cannot be read
    (loading then says what is wrong with the file)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > MAX_CONFIG_BYTES:
                    return {}
                config = json.loads(archive.read(info))
        else:
            import h5py

            with h5py.File(path, "r") as file:
                text = file.attrs.get("model_config")
                if text is None or len(text) > MAX_CONFIG_BYTES:
                    return {}
                config = json.loads(text)
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile):
        return {}
    return config if isinstance(config, dict) else {}


def custom_classes(config: dict) -> list[tuple[str, str | None]]:
    """``(registered name, module)`` of every object in the config that is not Keras' own.

    Keras 3 records ``registered_name`` (``package>Class``) and the class'
    module; Keras 2 records ``package>Class`` as the class name, no module.
    """
    found, stack = [], [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        stack.extend(item.values())
        class_name, module = item.get("class_name"), item.get("module")
        if not isinstance(class_name, str) or "config" not in item:
            continue
        registered = item.get("registered_name")
        name = registered if isinstance(registered, str) and registered else class_name
        if isinstance(module, str) and module:
            if module.split(".")[0] not in KERAS_MODULES:
                found.append((name, module))
        elif ">" in name:
            found.append((name, None))
    return sorted(set(found), key=lambda pair: (pair[0], pair[1] or ""))


def load_problem(error: Exception, custom: list[tuple[str, str | None]]) -> str:
    """Why Keras could not load a file, in one line."""
    text = " ".join(str(part) for part in (error, error.__cause__, error.__context__) if part)
    if "`Lambda` layer" in text:
        return (
            "a Lambda layer holds Python code, which Keras' safe mode refuses to load; "
            "replace it with a layer class registered with keras.saving.register_keras_serializable"
        )
    missing = [
        (name, module)
        for name, module in custom
        if keras.saving.get_registered_object(name) is None
    ]
    located = re.search(r"Could not locate \w+ '([^']+)'", text)
    if missing:
        name, module = missing[0]
        return f"class {name!r} is not found: {missing_reason(name, module)}"
    if located:
        return f"class {located.group(1)!r} is not found: {missing_reason(located.group(1), None)}"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:300]


def missing_reason(name: str, module: str | None) -> str:
    register = "register it with @keras.saving.register_keras_serializable"
    if module is None:
        return f"{register} in a module that is imported before compiling"
    if module == "__main__":
        return f"it was defined in a script or notebook; move it to a module and {register}"
    try:
        importable = find_spec(module) is not None
    except (ImportError, ValueError):
        importable = False
    if not importable:
        return f"its module {module!r} cannot be imported: install it or put it on PYTHONPATH"
    return f"importing its module {module!r} does not register it: {register}"


def saved_model_as_keras(path: Path, policy: CodePolicy = INSTALLED_ONLY) -> keras.Model:
    """A SavedModel's serving signature as a Keras model: one named input per argument,
    the signature's outputs by name; refused before TensorFlow loads it when its graph
    runs an op ``policy`` does not allow."""
    graph = path / "saved_model.pb"
    if graph.is_file():
        refused = first_denied(graph.read_bytes(), policy.graph_ops)
        if refused:
            raise ArtifactError(f"the SavedModel cannot be served: {refused}")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # noqa: BLE001 - TensorFlow raises many types for a bad directory.
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ArtifactError(f"cannot load the SavedModel ({first_line})") from None
    signatures = sorted(loaded.signatures)
    if SERVING_SIGNATURE in signatures:
        signature = SERVING_SIGNATURE
    elif len(signatures) == 1:
        signature = signatures[0]
    else:
        listed = ", ".join(signatures) or "none"
        raise ArtifactError(
            f"the SavedModel has no {SERVING_SIGNATURE!r} signature to serve (signatures: {listed})"
        )
    arguments = loaded.signatures[signature].structured_input_signature[1]
    for name, spec in arguments.items():
        if spec.shape.rank is None or spec.shape.rank == 0 or spec.shape[0] is not None:
            raise ArtifactError(
                f"the SavedModel's input {name!r} has shape {spec.shape}; the server "
                "needs a first dimension left open for the batch"
            )
    layer = _SignatureLayer(str(path), call_endpoint=signature)
    inputs = {
        name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name, name=name)
        for name, spec in sorted(arguments.items())
    }
    return keras.Model(inputs, layer(inputs))


class _SignatureLayer(keras.layers.TFSMLayer):
    """A SavedModel signature as a layer: signatures take their inputs by name."""

    def call(self, inputs, training=False):
        return self.call_endpoint_fn(**inputs)
