"""Marshmallow schemas: what each endpoint accepts and returns."""

import math

import numpy as np
from marshmallow import Schema, ValidationError, fields

from app.artifact import FLOAT32_MAX
from app.errors import MAX_REPORTED_ERRORS

FLOAT32 = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
NUMBER = {**FLOAT32, "example": 10.0}
ROW = {"type": "array", "items": FLOAT32, "minItems": 1, "maxItems": 1, "example": [10.0]}


class Instances(fields.List):
    """A batch of numbers, each bare or as a one-element row, loaded as float32.

    One pass checks every element's type, so a 1,000-instance batch costs one
    loop and one array conversion rather than 1,000 marshmallow field calls.
    Booleans and numeric strings are refused: JSON has real numbers for that.
    """

    def __init__(self, **kwargs):
        inner = fields.Raw(metadata={"oneOf": [NUMBER, ROW]})
        super().__init__(inner, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> np.ndarray:
        if not isinstance(value, list):
            raise ValidationError("Must be a list of numbers.")
        if not value:
            raise ValidationError("Must hold at least one instance.")
        numbers, errors = [], {}
        for index, item in enumerate(value):
            if type(item) is list and len(item) == 1:
                item = item[0]
            if type(item) is float or type(item) is int:
                try:
                    number = float(item)
                except OverflowError:  # An integer beyond any float.
                    number = math.inf
                # False for NaN too; in range, the float32 conversion cannot overflow.
                if -FLOAT32_MAX <= number <= FLOAT32_MAX:
                    numbers.append(number)
                    continue
                message = "Must be a finite number within float32 range."
            else:
                message = "Must be a number or a one-element list holding a number."
            errors[index] = [message]
            if len(errors) == MAX_REPORTED_ERRORS:
                break
        if errors:
            raise ValidationError(errors)
        return np.array(numbers, dtype=np.float32)


class Predictions(fields.List):
    """Predictions as a JSON array of numbers: the float32 array, left to orjson."""

    def __init__(self, **kwargs):
        super().__init__(fields.Float(), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class ModelRefSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(metadata={"description": "Model version.", "example": "1"})


class ModelRef(fields.Nested):
    """The answering model's name and version, already a dict in the documented shape."""

    def __init__(self, **kwargs):
        super().__init__(ModelRefSchema, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class PredictRequestSchema(Schema):
    instances = Instances(
        required=True,
        metadata={
            "description": (
                "The inputs, one prediction each: between 1 and MAX_BATCH_SIZE "
                "(1000 unless the server sets it otherwise) finite numbers in float32 "
                "range. Each may also be a one-element list (TensorFlow Serving's row "
                "format)."
            ),
            "example": [10.0, -1.5],
            "minItems": 1,
            "maxItems": 1000,
        },
    )


class PredictResponseSchema(Schema):
    predictions = Predictions(
        metadata={
            "description": "One prediction per instance, in the same order.",
            "example": [31.0, -3.5],
        }
    )
    model = ModelRef(metadata={"description": "The model version that answered."})


class LiveSchema(Schema):
    status = fields.String(metadata={"description": "Always `alive`.", "example": "alive"})


class ReadySchema(Schema):
    status = fields.String(
        metadata={"description": "`ready`, or why not: `loading`, `draining`.", "example": "ready"}
    )
    model = fields.Nested(
        ModelRefSchema,
        allow_none=True,
        metadata={"description": "The model this worker serves, or null before it loads."},
    )


class ModelInfoSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(metadata={"description": "Served version.", "example": "1"})
    path = fields.String(
        metadata={"description": "Version directory on the server.", "example": "models/linear/1"}
    )
    runtime = fields.String(
        metadata={"description": "Inference runtime: `litert`.", "example": "litert"}
    )
    artifact = fields.Dict(
        metadata={
            "description": (
                "The compiled artifact served: its file, SHA-256, and `source`: `compiled` "
                "(written by training or `python -m training compile`) or `converted at load`."
            ),
            "example": {"file": "model.tflite", "sha256": "9f2c…", "source": "compiled"},
        }
    )
    signature = fields.Dict(
        metadata={
            "description": "Input and output tensors: name, shape (-1 for the batch), dtype.",
            "example": {
                "inputs": [{"name": "x", "shape": [-1, 1], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [-1, 1], "dtype": "float32"}],
            },
        }
    )
    load_seconds = fields.Float(
        metadata={"description": "Time the server took to read and verify it.", "example": 0.05}
    )
    skipped_versions = fields.List(
        fields.String(),
        metadata={
            "description": "Newer versions that failed to load, with the reason.",
            "example": [],
        },
    )
    metadata = fields.Dict(
        metadata={
            "description": "The version's metadata.json, as written by training.",
            "example": {"created": "2026-11-26T05:40:00+00:00", "training": {"epochs": 500}},
        }
    )
