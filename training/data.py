"""The training data: a CSV file with a header, checked before anything trains on it."""

import csv
import hashlib
import math
from pathlib import Path

import numpy as np

# The notebook's six points on the line y = 3x + 1, kept in the repository.
DEFAULT_DATA = Path("data/train.csv")
# The columns the notebook's model needs: its input and its target.
COLUMNS = ("x", "y")
MIN_ROWS = 2


class DataError(ValueError):
    """The data file cannot be trained on; the message names the row and column."""


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets as float32 column vectors, or ``DataError`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    reader = csv.DictReader(text.splitlines())
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (header: {reader.fieldnames})")
    rows = []
    for number, row in enumerate(reader, start=2):  # Row 1 is the header.
        values = []
        for column in COLUMNS:
            cell = (row.get(column) or "").strip()
            try:
                value = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: row {number}, column {column!r}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise DataError(f"{path}: row {number}, column {column!r}: {cell!r} is not finite")
            values.append(value)
        rows.append(values)
    if len(rows) < MIN_ROWS:
        raise DataError(f"{path}: {len(rows)} data rows; at least {MIN_ROWS} are needed")
    data = np.array(rows, dtype=np.float32)
    return data[:, :1], data[:, 1:]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
