"""The inference core that every wire format adapts to: validated float32 in, outputs out.

``/predict``, Open Inference Protocol ``/v2`` and TensorFlow Serving's ``/v1``
only translate their requests into named float32 arrays with the converters
here and the results into their responses. The rules for numbers and shapes,
the batch limit, the overflow check, the metrics and the prediction log live
once, in this module.
"""

import math
from itertools import chain

import numpy as np
from flask import current_app

from app.config import limits as config_limits
from app.core.serving import log_prediction
from app.extensions import BATCH_SIZE
from app.ops.error_shape import MAX_REPORTED_ERRORS, cut
from app.runtime.artifact import FLOAT32_MAX, CompiledModel, TensorSpec, not_finite
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


NUMBER_MESSAGE = "Must be a finite number within float32 range."
SCALAR_MESSAGE = "Must be a finite number within float32 range, or a one-element list of one."


def as_number(value) -> float | None:
    """``value`` as a float in float32 range, or None: booleans and strings are no numbers."""
    if type(value) is not float and type(value) is not int:
        return None
    try:
        number = float(value)
    except OverflowError:  # An integer beyond any float.
        return None
    # False for NaN too; in range, the float32 conversion cannot overflow.
    return number if -FLOAT32_MAX <= number <= FLOAT32_MAX else None


def is_scalar(spec: TensorSpec) -> bool:
    """One number per instance: feature shape () or (1,), where a bare number is allowed."""
    return spec.feature_shape in ((), (1,))


def flatten(value, shape: tuple[int, ...], into: list) -> str | None:
    """Append ``value``'s numbers, row-major, if it is a nested list of ``shape``; else say why."""
    if not shape:
        number = as_number(value)
        if number is None:
            return NUMBER_MESSAGE
        into.append(number)
        return None
    if type(value) is not list or len(value) != shape[0]:
        return f"Must be a list of {shape[0]} (shape {list(shape)})."
    for item in value:
        problem = flatten(item, shape[1:], into)
        if problem:
            return problem
    return None


def numbers_array(nested, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """``nested`` as a float32 array when it is a regular nested list (of ``shape``,
    if given) of JSON numbers in float32 range; else None, and the caller's
    element-by-element path says what is wrong and where.

    numpy converts in C: one 224x224x3 image in 12 ms against 47 ms element
    by element. It would also convert booleans and numeric strings silently,
    so the leaves' types are checked, with a C-speed ``set(map(type, ...))``.
    """
    try:
        array = np.array(nested, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # Ragged, or not numbers.
        return None
    if shape is not None and array.shape != shape:
        return None
    leaves = nested if array.ndim else [nested]
    for _ in range(array.ndim - 1):
        leaves = chain.from_iterable(leaves)
    if not set(map(type, leaves)) <= {float, int}:
        return None
    # False for NaN too, which the standard library's parser may have read.
    if not (np.abs(array) <= FLOAT32_MAX).all():
        return None
    return array.astype(np.float32)


def rows_to_array(rows: list, spec: TensorSpec, errors: dict, label=None) -> np.ndarray | None:
    """One input's instances (TensorFlow Serving's row format) as a float32 batch.

    Each row is the input's feature-shaped value; a one-number input also
    takes a bare number. Problems go into ``errors`` by row index (and under
    ``label``, the input's name, for instances keyed by input name).
    """
    shape, scalar, numbers = spec.feature_shape, is_scalar(spec), []
    if not scalar:
        array = numbers_array(rows, (len(rows), *shape))
        if array is not None:
            return array
    for index, row in enumerate(rows):
        if not scalar:
            problem = flatten(row, shape, numbers)
        else:
            # as_number() inline, for the common one-number model: a 1,000-row batch
            # costs 100 µs this way against 150 µs with a call per row.
            if shape and type(row) is list and len(row) == 1:
                row = row[0]
            if type(row) is float or type(row) is int:
                try:
                    number = float(row)
                except OverflowError:  # An integer beyond any float.
                    number = math.inf
                # False for NaN too; in range, the float32 conversion cannot overflow.
                if -FLOAT32_MAX <= number <= FLOAT32_MAX:
                    numbers.append(number)
                    continue
            problem = SCALAR_MESSAGE
        if problem:
            errors[index] = {label: [problem]} if label else [problem]
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        return None
    return np.array(numbers, dtype=np.float32).reshape(len(rows), *shape)


def instances_to_inputs(instances, compiled: CompiledModel) -> dict[str, np.ndarray]:
    """TensorFlow Serving's row format: a list of values, or of objects keyed by input name."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(422, "instances must be a non-empty list.")
    check_batch(len(instances), compiled)
    inputs = compiled.inputs
    errors = {}
    if len(inputs) == 1 and not all(type(row) is dict for row in instances):
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


def check_ranges(inputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
    """422 for values beyond the range in which the runtime was found to agree with Keras."""
    for spec in specs:
        if spec.valid_range is None:
            continue
        low, high = spec.valid_range
        array = inputs[spec.name]
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
    valid range or an output overflows float32."""
    compiled = runner.compiled
    if compiled.ranged:
        check_ranges(inputs, compiled.inputs)
    outputs = runner.run([inputs[spec.name] for spec in compiled.inputs])
    bad = set()
    for output in outputs:
        if not all_finite(output):
            rows = not_finite(output).reshape(len(output), -1).any(axis=1)
            bad.update(int(i) for i in np.flatnonzero(rows))
    if bad:
        raise InvalidInput(
            422,
            "The model's output is not a finite float32 for some instances.",
            {i: ["Prediction is not finite."] for i in sorted(bad)[:MAX_REPORTED_ERRORS]},
        )
    named = {spec.name: output for spec, output in zip(compiled.outputs, outputs, strict=True)}
    batch = len(outputs[0])
    BATCH_SIZE.observe(batch)
    if runner.monitor:
        runner.monitor.observe(inputs)
    log_prediction(runner, inputs, named)
    return named


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is a finite float32 short of LiteRT's saturation value.

    Python's comparisons are cheaper than a numpy call for a few values (about
    20 µs a request here, 3 % of a single-instance request's CPU).
    """
    if values.size <= 16:
        return all(-FLOAT32_MAX < value < FLOAT32_MAX for value in values.ravel().tolist())
    return not not_finite(values).any()


def rows_of(outputs: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], squeeze=True) -> list:
    """Outputs as one prediction per instance (row format).

    One output: its value per instance, a bare number when it holds one number
    and ``squeeze`` (this server's /predict; TensorFlow Serving writes [v]).
    Several: an object keyed by output name per instance.
    """

    def column(spec):
        return squeezed(outputs[spec.name], spec) if squeeze else outputs[spec.name]

    if len(specs) == 1:
        return column(specs[0])
    columns = {spec.name: column(spec) for spec in specs}
    batch = len(next(iter(columns.values())))
    return [{name: column[i] for name, column in columns.items()} for i in range(batch)]


def squeezed(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A one-number output as a 1-D batch (bare numbers in JSON); others as they are."""
    return array.reshape(len(array)) if is_scalar(spec) else array


# Open Inference Protocol datatypes whose every value float32 holds exactly.
EXACT_DATATYPES = {
    "FP32": None,
    "FP16": None,
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
}


# Little-endian numpy types of the datatypes above, for binary tensor data.
BINARY_DTYPES = {
    "FP32": "<f4",
    "FP16": "<f2",
    "INT8": "i1",
    "INT16": "<i2",
    "UINT8": "u1",
    "UINT16": "<u2",
}
FP16_MAX = 65504.0


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


def tensor_to_array(
    tensor: dict, spec: TensorSpec, compiled: CompiledModel, reader: BinaryTensors
) -> np.ndarray:
    name, datatype, shape = spec.name, tensor["datatype"], list(tensor["shape"])
    if datatype not in EXACT_DATATYPES:
        raise InvalidInput(
            400,
            f"Input {name!r} has datatype {cut(datatype)}; the model takes FP32, which cannot "
            f"hold every {cut(datatype)} value exactly "
            "(send FP32, FP16, INT8, INT16, UINT8 or UINT16).",
        )
    expected = [-1, *spec.feature_shape]
    if len(shape) != len(expected) or shape[1:] != expected[1:] or shape[0] < 1:
        raise InvalidInput(
            400, f"Input {name!r} has shape {cut(shape)}; the model takes {expected}."
        )
    check_batch(shape[0], compiled)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise InvalidInput(400, f"Input {name!r} has both data and binary_data_size.")
        array = binary_to_array(name, datatype, shape, size, reader)
    elif "data" not in tensor:
        raise InvalidInput(400, f"Input {name!r} has no data and no binary_data_size.")
    else:
        array = data_to_array(name, datatype, shape, tensor["data"])
    if datatype == "FP16" and not (np.abs(array) <= FP16_MAX).all():
        raise InvalidInput(400, f"Input {name!r} has values beyond FP16's range (±{FP16_MAX:g}).")
    return array


def binary_to_array(name, datatype, shape, size, reader: BinaryTensors) -> np.ndarray:
    dtype = np.dtype(BINARY_DTYPES[datatype])
    needed = math.prod(shape) * dtype.itemsize
    if type(size) is not int or size != needed:
        raise InvalidInput(
            400,
            f"Input {name!r} has binary_data_size {cut(size)}; shape {shape} of {datatype} "
            f"is {needed} bytes.",
        )
    array = np.frombuffer(reader.take(name, size), dtype).astype(np.float32).reshape(shape)
    # NaN compares false: refused with the infinities and float32's saturation.
    if dtype.kind == "f" and not (np.abs(array) < FLOAT32_MAX).all():
        raise InvalidInput(400, f"Input {name!r} has values that are not finite float32.")
    return array


def data_to_array(name, datatype, shape, data) -> np.ndarray:
    """JSON data: flat in row-major order, or nested exactly as ``shape``."""
    integer_range = EXACT_DATATYPES[datatype]
    array = numbers_array(data) if integer_range is None else None
    if array is None:
        numbers: list[float] = []
        problem = flatten_any(data, numbers, integer_range)
        if problem:
            raise InvalidInput(400, f"Input {name!r}: {problem}")
        try:  # The values are right; is the nesting?
            array = np.array(data, dtype=np.float64).astype(np.float32)
        except ValueError:
            raise InvalidInput(
                400, f"Input {name!r}: nested data is ragged; it must match shape {shape}."
            ) from None
    flat = array.ndim <= 1 and array.size == math.prod(shape)
    if not flat and list(array.shape) != shape:
        raise InvalidInput(
            400,
            f"Input {name!r} has data of shape {list(array.shape)}; shape {shape} needs "
            f"{math.prod(shape)} values, flat or nested as the shape.",
        )
    return array.reshape(shape)


def flatten_any(data, into: list, integer_range: tuple[int, int] | None) -> str | None:
    """Append the numbers of flat or nested ``data`` in row-major order; else say why not."""
    stack = [iter(data if type(data) is list else [data])]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            if integer_range is not None:
                low, high = integer_range
                if type(item) is not int or not low <= item <= high:
                    return f"{cut(repr(item))} is not an integer from {low} to {high}."
                into.append(float(item))
                continue
            number = as_number(item)
            if number is None:
                return f"{cut(repr(item))} is not a finite number within float32 range."
            into.append(number)
        else:
            stack.pop()
    return None
