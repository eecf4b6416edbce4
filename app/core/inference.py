"""The inference core that every wire format adapts to: validated typed arrays in, outputs out.

``/predict``, Open Inference Protocol ``/v2`` and TensorFlow Serving's ``/v1``
only translate their requests into named arrays of each input's dtype with
the converters here, and the results into their responses. The rules for numbers and shapes,
the batch limit, the overflow check, the metrics and the prediction log live
once, in this module.
"""

import base64
import binascii
import math
import time
from itertools import chain

import numpy as np
from flask import current_app, g, has_app_context

from app.config import limits as config_limits
from app.core import shadow
from app.core.serving import log_prediction
from app.extensions import BATCH_SIZE
from app.ops.error_shape import MAX_REPORTED_ERRORS, cut
from app.ops.statistics import Inference
from app.runtime.artifact import CompiledModel, TensorSpec, not_finite
from app.runtime.datatypes import DATATYPES, PROTOCOL_DTYPES, Kind, holds_exactly, kind
from app.runtime.model import ModelRunner


class InvalidInput(Exception):
    """Input the model cannot take: an HTTP status, a message, and errors by place."""

    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or {}

    @property
    def protocol_status(self) -> int:
        """The standard protocols answer bad input with 400 (a batch too large stays 413)."""
        return 400 if self.status == 422 else self.status


def value_message(spec: TensorSpec) -> str:
    """What each value of ``spec`` must be, for a model with one number per instance too."""
    message = f"Must be {spec.kind.describe()}"
    return f"{message}, or a one-element list of one." if is_scalar(spec) else f"{message}."


def leaf(value, tensor_kind: Kind):
    """``value`` as a value of the dtype, or None: no silent cast from another JSON type.

    Booleans are no numbers and numbers no booleans; an integer dtype takes JSON
    integers only (1.5 and 1.0 alike are refused); a float dtype takes integers
    and floats within its range (False for NaN too).
    """
    family, value_type = tensor_kind.family, type(value)
    if family == "float":
        if value_type is not float and value_type is not int:
            return None
        try:
            number = float(value)
        except OverflowError:  # An integer beyond any float.
            return None
        return number if tensor_kind.low <= number <= tensor_kind.high else None
    if family == "int":
        return value if value_type is int and tensor_kind.low <= value <= tensor_kind.high else None
    if family == "bool":
        return value if value_type is bool else None
    if value_type is str:
        return value.encode("utf-8", "surrogatepass")
    if value_type is bytes:  # gRPC's bytes_contents.
        return value
    if value_type is dict and value.keys() == {"b64"} and type(value["b64"]) is str:
        # TensorFlow Serving's form for binary strings in JSON.
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            return None
    return None


def is_scalar(spec: TensorSpec) -> bool:
    """One number per instance: feature shape () or (1,), where a bare number is allowed."""
    return spec.feature_shape in ((), (1,))


def flatten(value, shape: tuple[int, ...], into: list, tensor_kind: Kind) -> str | None:
    """Append ``value``'s values, row-major, if it is a nested list of ``shape``; else say why."""
    if not shape:
        checked = leaf(value, tensor_kind)
        if checked is None:
            return f"Must be {tensor_kind.describe()}."
        into.append(checked)
        return None
    if type(value) is not list or len(value) != shape[0]:
        return f"Must be a list of {shape[0]} (shape {list(shape)})."
    for item in value:
        problem = flatten(item, shape[1:], into, tensor_kind)
        if problem:
            return problem
    return None


# The JSON types each family of dtypes takes, for the one-pass type check.
JSON_TYPES = {"float": {float, int}, "int": {int}, "bool": {bool}}


def typed_array(nested, tensor_kind: Kind, shape: tuple[int, ...] | None = None):
    """``nested`` as an array of the dtype when it is a regular nested list (of ``shape``,
    if given) of JSON values the dtype holds; else None, and the caller's
    element-by-element path says what is wrong and where.

    numpy converts in C: one 224x224x3 image in 12 ms against 47 ms element
    by element. It would also convert booleans, numeric strings and floats
    silently, so the leaves' types are checked, with a C-speed
    ``set(map(type, ...))``, and the values against the dtype's range.
    """
    family = tensor_kind.family
    if family not in JSON_TYPES:
        return None
    try:
        array = np.array(nested, dtype=np.float64 if family == "float" else tensor_kind.numpy)
    except (ValueError, TypeError, OverflowError):  # Ragged, not numbers, out of range.
        return None
    if shape is not None and array.shape != shape:
        return None
    leaves = nested if array.ndim else [nested]
    for _ in range(array.ndim - 1):
        leaves = chain.from_iterable(leaves)
    if not set(map(type, leaves)) <= JSON_TYPES[family]:
        return None
    if family == "float":
        # False for NaN too, which the standard library's parser may have read.
        if not (np.abs(array) <= tensor_kind.high).all():
            return None
        return array.astype(tensor_kind.numpy)
    return array


def rows_to_array(rows: list, spec: TensorSpec, errors: dict, label=None) -> np.ndarray | None:
    """One input's instances (TensorFlow Serving's row format) as a batch of its dtype.

    Each row is the input's feature-shaped value; a one-number input also
    takes a bare value. Problems go into ``errors`` by row index (and under
    ``label``, the input's name, for instances keyed by input name).
    """
    if spec.open:
        return open_rows_to_array(rows, spec, errors, label)
    shape, scalar, tensor_kind = spec.feature_shape, is_scalar(spec), spec.kind
    if not scalar or tensor_kind.family != "float":
        array = typed_array(rows, tensor_kind, (len(rows), *shape))
        if array is not None:
            return array
    values = []
    for index, row in enumerate(rows):
        if scalar and shape and type(row) is list and len(row) == 1:
            row = row[0]
        if scalar:
            # leaf() inline for the common one-number float model: a 1,000-row batch
            # costs 100 µs this way against 150 µs with a call per row.
            if tensor_kind.family == "float" and (type(row) is float or type(row) is int):
                try:
                    number = float(row)
                except OverflowError:  # An integer beyond any float.
                    number = math.inf
                # False for NaN too; in range, the conversion to the dtype cannot overflow.
                if tensor_kind.low <= number <= tensor_kind.high:
                    values.append(number)
                    continue
            checked = leaf(row, tensor_kind)
            problem = value_message(spec) if checked is None else None
            if not problem:
                values.append(checked)
        else:
            problem = flatten(row, shape, values, tensor_kind)
        if problem and reported(errors, index, problem, label):
            break
    if errors:
        return None
    return typed(values, tensor_kind, (len(rows), *shape))


def reported(errors: dict, index: int, problem: str, label=None) -> bool:
    """Record ``problem`` for instance ``index`` (under the input's name ``label``, if any);
    whether enough problems are reported to stop looking."""
    errors[index] = {label: [problem]} if label else [problem]
    return len(errors) >= MAX_REPORTED_ERRORS


def typed(values: list, tensor_kind: Kind, shape) -> np.ndarray:
    """Checked values (Python numbers, or bytes) as an array of the dtype and ``shape``."""
    if tensor_kind.family == "bytes":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = np.float64 if tensor_kind.family == "float" else tensor_kind.numpy
    return np.array(values, dtype=dtype).astype(tensor_kind.numpy).reshape(shape)


def open_rows_to_array(rows: list, spec: TensorSpec, errors: dict, label=None):
    """Instances of an input with open dimensions: each row sets their sizes, and every row
    of a batch must have the same (a batch is one tensor: TensorFlow Serving refuses a
    ragged one too)."""
    array = typed_array(rows, spec.kind)
    if array is not None and array.ndim == 1 + len(spec.feature_shape):
        if spec.fits(array.shape[1:]):
            return array
    shape = nested_shape(rows[0])
    values = []
    for index, row in enumerate(rows):
        if not spec.fits(shape):
            problem = (
                f"Must have shape {list(spec.feature_shape)} (-1: any size); has {list(shape)}."
            )
        elif nested_shape(row) != shape:
            problem = (
                f"Must have the shape of the first instance, {list(shape)}: a batch is one "
                "tensor (pad the instances to one size, or send them one by one)."
            )
        else:
            problem = flatten(row, shape, values, spec.kind)
        if problem and reported(errors, index, problem, label):
            break
    if errors:
        return None
    return typed(values, spec.kind, (len(rows), *shape))


def nested_shape(value) -> tuple[int, ...]:
    """The shape of a nested list, read along its first elements."""
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def instances_to_inputs(instances, compiled: CompiledModel) -> dict[str, np.ndarray]:
    """TensorFlow Serving's row format: a list of values, or of objects keyed by input name."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(422, "instances must be a non-empty list.")
    check_batch(len(instances), compiled)
    inputs = compiled.inputs
    errors = {}
    keyed = all(type(row) is dict and not is_b64(row, inputs) for row in instances)
    if len(inputs) == 1 and not keyed:
        (spec,) = inputs
        array = rows_to_array(instances, spec, errors)
        if errors:
            raise InvalidInput(422, "Some instances do not fit the model's input.", errors)
        return {spec.name: array}
    # Objects keyed by input name: any model's form, and the only one with several inputs.
    names = {spec.name for spec in inputs}
    for index, row in enumerate(instances):
        if type(row) is not dict:
            errors[index] = [f"Must be an object keyed by input name: {sorted(names)}."]
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if not errors:
        _check_keys(instances, names, errors)
    arrays = {}
    for spec in inputs:
        if errors:
            raise InvalidInput(422, "Some instances do not fit the model's inputs.", errors)
        arrays[spec.name] = rows_to_array(
            [row[spec.name] for row in instances], spec, errors, spec.name
        )
    if errors:
        raise InvalidInput(422, "Some instances do not fit the model's inputs.", errors)
    return arrays


def is_b64(value, inputs) -> bool:
    """Whether ``value`` is TensorFlow Serving's ``{"b64": ...}`` string rather than an
    instance keyed by input name (unless the model has an input called b64)."""
    return (
        type(value) is dict
        and value.keys() == {"b64"}
        and not any(spec.name == "b64" for spec in inputs)
    )


def _check_keys(rows: list[dict], names: set[str], errors: dict) -> None:
    for index, row in enumerate(rows):
        missing, unknown = names - row.keys(), row.keys() - names
        if missing or unknown:
            messages = [f"Missing input {name!r}." for name in sorted(missing)]
            messages += [f"Unknown input {name!r}." for name in sorted(unknown)]
            errors[index] = messages
            if len(errors) >= MAX_REPORTED_ERRORS:
                return


def columns_to_inputs(columns, compiled: CompiledModel) -> dict[str, np.ndarray]:
    """TensorFlow Serving's columnar format: one batch tensor, or an object of them by name."""
    inputs = compiled.inputs
    if len(inputs) == 1 and not isinstance(columns, dict):
        columns = {inputs[0].name: columns}
    if not isinstance(columns, dict) or set(columns) != {spec.name for spec in inputs}:
        names = sorted(spec.name for spec in inputs)
        raise InvalidInput(400, f"inputs must hold exactly the model's inputs: {names}.")
    arrays, errors, batch = {}, {}, None
    for spec in inputs:
        column = columns[spec.name]
        if not isinstance(column, list) or not column:
            raise InvalidInput(400, f"Input {spec.name!r} must be a non-empty list (the batch).")
        check_batch(len(column), compiled)
        if batch is not None and len(column) != batch:
            raise InvalidInput(400, "All inputs must have the same batch size.")
        batch = len(column)
        label = spec.name if len(inputs) > 1 else None
        arrays[spec.name] = rows_to_array(column, spec, errors, label)
        if errors:
            raise InvalidInput(400, f"Input {spec.name!r} does not fit the model.", errors)
    return arrays


def check_batch(size: int, compiled: CompiledModel) -> None:
    """413 for more instances than MAX_BATCH_SIZE, or more numbers in or out than
    MAX_TENSOR_ELEMENTS: checked before a value is converted."""
    limits = config_limits(current_app.config)
    if size > limits.max_batch(compiled):
        raise InvalidInput(413, limits.batch_message(size, compiled))


def check_elements(count: int) -> None:
    """413 for more numbers than MAX_TENSOR_ELEMENTS: for inputs with open dimensions,
    whose size only a request says."""
    limit = current_app.config["MAX_TENSOR_ELEMENTS"]
    if count > limit:
        raise InvalidInput(
            413, f"The request carries {count:,} numbers, over MAX_TENSOR_ELEMENTS={limit:,}."
        )


def check_ranges(inputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
    """422 for values beyond the range in which the runtime was found to agree with Keras."""
    for spec in specs:
        if spec.valid_range is None:
            continue
        low, high = spec.valid_range
        array = inputs[spec.name]
        if not array.size or low <= array.min() and array.max() <= high:
            continue  # Two passes without a temporary array: an image's 150,528 values in 15 µs.
        rows = ((array < low) | (array > high)).reshape(len(array), -1).any(axis=1)
        if rows.any():
            message = (
                f"Values of input {spec.name!r} must be within [{low:g}, {high:g}]: beyond it "
                "this model's serving runtime was not found to agree with the trained model."
            )
            bad = np.flatnonzero(rows)[:MAX_REPORTED_ERRORS].tolist()
            raise InvalidInput(422, message, {int(i): [message] for i in bad})


def infer(runner: ModelRunner, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs for validated inputs, or ``InvalidInput`` where an input is beyond its
    valid range or a float output overflows its dtype. The request is the version's from
    here on (app/ops/statistics.py)."""
    inference = Inference(runner.name, str(runner.number), time.perf_counter())
    if has_app_context():
        g.inference = inference
    compiled = runner.compiled
    if compiled.open:
        check_elements(sum(array.size for array in inputs.values()))
    if compiled.ranged:
        check_ranges(inputs, compiled.inputs)
    try:
        outputs = runner.run([inputs[spec.name] for spec in compiled.inputs])
    except RuntimeError as error:  # LiteRT's kernels refuse what they cannot compute.
        problem = (str(error).splitlines() or [""])[0][:200]
        raise InvalidInput(422, f"The model's runtime refused these inputs: {problem}") from None
    inference.waited, inference.computed = runner.timings
    bad = set()
    for output in outputs:
        if not all_finite(output):
            rows = not_finite(output).reshape(len(output), -1).any(axis=1)
            bad.update(int(i) for i in np.flatnonzero(rows))
    if bad:
        raise InvalidInput(
            422,
            "The model's output is not a finite number for some instances.",
            {i: ["Prediction is not finite."] for i in sorted(bad)[:MAX_REPORTED_ERRORS]},
        )
    named = {spec.name: output for spec, output in zip(compiled.outputs, outputs, strict=True)}
    batch = len(outputs[0])
    BATCH_SIZE(runner.name, inference.version).observe(batch)
    if runner.monitor:
        runner.monitor.observe(inputs)
    log_prediction(runner, inputs, named)
    if runner.shadow is not None:
        shadow.offer(runner, inputs, named)
    inference.ended = time.perf_counter()
    return named


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite short of LiteRT's saturation value (integers always are).

    Python's comparisons are cheaper than a numpy call for a few values (about
    20 µs a request here, 3 % of a single-instance request's CPU).
    """
    if values.dtype.kind != "f":
        return True
    if values.size <= 16:
        largest = float(np.finfo(values.dtype).max)
        return all(-largest < value < largest for value in values.ravel().tolist())
    return not not_finite(values).any()


def length_prefixed(name: str, data: memoryview, shape: list[int]) -> np.ndarray:
    """BYTES as the binary tensor data extension writes them: each element a 4-byte
    little-endian length, then its bytes; exactly ``shape``'s count of them."""
    count, offset, values = math.prod(shape), 0, []
    for _ in range(count):
        if offset + 4 > len(data):
            break
        length = int.from_bytes(data[offset : offset + 4], "little")
        if offset + 4 + length > len(data):
            break
        values.append(bytes(data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    if len(values) != count or offset != len(data):
        raise InvalidInput(
            400,
            f"Input {name!r}: its BYTES length prefixes do not add up to {count} elements "
            f"in {len(data)} bytes.",
        )
    return typed(values, kind("string"), shape)


def prefixed_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor in the binary tensor data extension's form."""
    return b"".join(
        len(value).to_bytes(4, "little") + value for value in array.reshape(-1).tolist()
    )


def output_bytes(array: np.ndarray, spec: TensorSpec) -> bytes:
    """An output's raw bytes, as the binary extension and gRPC's raw contents carry them."""
    if spec.kind.family == "bytes":
        return prefixed_bytes(array)
    return np.ascontiguousarray(array, spec.kind.numpy).tobytes()


def json_ready(array: np.ndarray, spec: TensorSpec):
    """An output as JSON writes it: the array (orjson writes numpy's numbers), or for
    strings nested lists of text, a string that is not UTF-8 as ``{"b64": ...}``."""
    if spec.kind.family != "bytes":
        return array
    return np.vectorize(text_or_b64, otypes=[object])(array).tolist()


def text_or_b64(value: bytes):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def rows_of(outputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], squeeze=True) -> list:
    """Outputs as one prediction per instance (row format).

    One output: its value per instance, a bare number when it holds one number
    and ``squeeze`` (this server's /predict; TensorFlow Serving writes [v]).
    Several: an object keyed by output name per instance.
    """

    def column(spec):
        array = squeezed(outputs[spec.name], spec) if squeeze else outputs[spec.name]
        return json_ready(array, spec)

    if len(specs) == 1:
        return column(specs[0])
    columns = {spec.name: column(spec) for spec in specs}
    batch = len(next(iter(columns.values())))
    return [{name: column[i] for name, column in columns.items()} for i in range(batch)]


def squeezed(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A one-number output as a 1-D batch (bare numbers in JSON); others as they are."""
    return array.reshape(len(array)) if is_scalar(spec) else array


class BinaryTensors:
    """The raw tensors after a request's JSON (binary tensor data extension), read in order."""

    def __init__(self, data):
        self.data, self.offset = memoryview(data if data is not None else b""), 0

    def take(self, name: str, size: int) -> memoryview:
        if self.offset + size > len(self.data):
            raise InvalidInput(
                400, f"Input {name!r} needs {size} bytes of binary data; {self.remaining} remain."
            )
        self.offset += size
        return self.data[self.offset - size : self.offset]

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


def check_requested_outputs(wanted: list[str], compiled: CompiledModel) -> None:
    """Refuse an output the model does not have, or one asked for twice."""
    known = {spec.name for spec in compiled.outputs}
    unknown = [output for output in wanted if output not in known]
    if unknown:
        raise InvalidInput(400, f"Unknown output {cut(unknown[0])!r}; outputs: {sorted(known)}.")
    if len(set(wanted)) != len(wanted):
        raise InvalidInput(400, "Each output may be requested once.")


def tensors_to_inputs(
    tensors: list[dict], compiled: CompiledModel, binary=None
) -> dict[str, np.ndarray]:
    """Open Inference Protocol input tensors: JSON data (flat, or nested exactly as the
    shape), or raw bytes from ``binary`` (the binary tensor data extension)."""
    inputs = compiled.inputs
    by_name = {spec.name: spec for spec in inputs}
    names = [tensor["name"] for tensor in tensors]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        known = sorted(by_name)
        raise InvalidInput(
            400, f"Unknown input {cut(unknown[0])!r}; the model's inputs are {known}."
        )
    if len(set(names)) != len(names) or set(names) != set(by_name):
        raise InvalidInput(400, f"Give each of the model's inputs once: {sorted(by_name)}.")
    arrays, batch, reader = {}, None, BinaryTensors(binary)
    for tensor in tensors:
        spec = by_name[tensor["name"]]
        arrays[spec.name] = tensor_to_array(tensor, spec, compiled, reader)
        if batch is not None and len(arrays[spec.name]) != batch:
            raise InvalidInput(400, "All inputs must have the same batch size (shape[0]).")
        batch = len(arrays[spec.name])
    if reader.remaining:
        raise InvalidInput(
            400, f"{reader.remaining} bytes of binary data follow the inputs' binary_data_size."
        )
    return arrays


def accepted_datatypes(spec: TensorSpec) -> list[str]:
    """The protocol's datatypes whose every value the input's dtype holds exactly."""
    return [datatype for dtype, datatype in DATATYPES.items() if holds_exactly(dtype, spec.dtype)]


def tensor_to_array(
    tensor: dict, spec: TensorSpec, compiled: CompiledModel, reader: BinaryTensors
) -> np.ndarray:
    name, datatype, shape = spec.name, tensor["datatype"], list(tensor["shape"])
    accepted = accepted_datatypes(spec)
    if datatype not in accepted:
        model_datatype = DATATYPES[spec.dtype]
        raise InvalidInput(
            400,
            f"Input {name!r} has datatype {cut(datatype)}; the model takes {model_datatype}, "
            f"which cannot hold every {cut(datatype)} value exactly "
            f"(send {', '.join(accepted)}).",
        )
    source = kind(PROTOCOL_DTYPES[datatype])
    expected = [-1, *spec.feature_shape]
    if len(shape) != len(expected) or shape[0] < 1 or not spec.fits(shape[1:]):
        raise InvalidInput(
            400, f"Input {name!r} has shape {cut(shape)}; the model takes {expected}."
        )
    check_batch(shape[0], compiled)
    if spec.open:
        check_elements(math.prod(shape))
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise InvalidInput(400, f"Input {name!r} has both data and binary_data_size.")
        array = binary_to_array(name, source, shape, size, reader)
    elif "data" not in tensor:
        raise InvalidInput(400, f"Input {name!r} has no data and no binary_data_size.")
    else:
        array = data_to_array(name, source, shape, tensor["data"])
    return array.astype(spec.kind.numpy, copy=False)


def binary_to_array(name, source: Kind, shape, size, reader: BinaryTensors) -> np.ndarray:
    """Raw little-endian values of the request's datatype ``source``, checked as JSON's are."""
    if source.family == "bytes":
        if type(size) is not int or size < 0:
            raise InvalidInput(400, f"Input {name!r} has binary_data_size {cut(size)}.")
        return length_prefixed(name, reader.take(name, size), shape)
    dtype = source.numpy
    needed = math.prod(shape) * dtype.itemsize
    datatype = DATATYPES[source.name]
    if type(size) is not int or size != needed:
        raise InvalidInput(
            400,
            f"Input {name!r} has binary_data_size {cut(size)}; shape {shape} of {datatype} "
            f"is {needed} bytes.",
        )
    array = np.frombuffer(reader.take(name, size), dtype).reshape(shape)
    # NaN compares false (and is the minimum of any array holding one): refused with the
    # infinities and the dtype's saturation, in two passes that allocate nothing.
    if (
        source.family == "float"
        and array.size
        and not (-source.high < array.min() and array.max() < source.high)
    ):
        raise InvalidInput(400, f"Input {name!r} has values that are not finite {datatype}.")
    if source.family == "bool" and not (array.view(np.uint8) <= 1).all():
        raise InvalidInput(400, f"Input {name!r} has BOOL bytes other than 0 and 1.")
    return array


def data_to_array(name, source: Kind, shape, data) -> np.ndarray:
    """JSON data of the request's datatype ``source``: flat in row-major order, or nested
    exactly as ``shape``."""
    array = typed_array(data, source)
    if array is None:
        values: list = []
        problem = flatten_any(data, values, source)
        if problem:
            raise InvalidInput(400, f"Input {name!r}: {problem}")
        nesting = nested_shape(data) if type(data) is list else ()
        if math.prod(nesting) != len(values):  # The values are right; the nesting is not.
            raise InvalidInput(
                400, f"Input {name!r}: nested data is ragged; it must match shape {shape}."
            )
        array = typed(values, source, nesting)
    flat = array.ndim <= 1 and array.size == math.prod(shape)
    if not flat and list(array.shape) != shape:
        raise InvalidInput(
            400,
            f"Input {name!r} has data of shape {list(array.shape)}; shape {shape} needs "
            f"{math.prod(shape)} values, flat or nested as the shape.",
        )
    return array.reshape(shape)


def flatten_any(data, into: list, source: Kind) -> str | None:
    """Append the values of flat or nested ``data`` in row-major order; else say why not."""
    stack = [iter(data if type(data) is list else [data])]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            value = leaf(item, source)
            if value is None:
                return f"{cut(repr(item))} is not {source.describe()}."
            into.append(value)
        else:
            stack.pop()
    return None
