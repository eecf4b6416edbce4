"""What one request may carry, derived from the served model's signature and the settings."""

from dataclasses import dataclass

from app.runtime.artifact import DEFAULT_MAX_MODEL_BYTES
from app.runtime.model_code import INSTALLED_ONLY, CodePolicy

# Bytes of JSON a client may need for one float32 number: "-1.2345678901234567e-05, ".
JSON_BYTES_PER_NUMBER = 32
DEFAULT_BODY_BYTES = 1024 * 1024
DEFAULT_TENSOR_ELEMENTS = 1024 * 1024
# Half of Gunicorn's default graceful timeout (30 s): see ``max_batch_seconds``.
DEFAULT_BATCH_SECONDS = 15.0


@dataclass(frozen=True)
class Limits:
    """The bounds the settings put on requests and versions; ``max_batch`` and ``body_bytes``
    turn them into one model's.

    ``max_content_length`` None means "derived": 1 MiB, or one instance of the
    model's inputs written as JSON at ``JSON_BYTES_PER_NUMBER``, whichever is larger.
    """

    max_batch_size: int = 1000
    max_tensor_elements: int = DEFAULT_TENSOR_ELEMENTS
    max_content_length: int | None = None
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    # The longest the largest admitted batch may take in the loader's trial, so that
    # any inference finishes while its worker drains (app/config.py derives it).
    max_batch_seconds: float = DEFAULT_BATCH_SECONDS
    # The code and graph ops a version's files may make the server run.
    code: CodePolicy = INSTALLED_ONLY

    def max_batch(self, compiled) -> int:
        """The most instances a request may carry: MAX_BATCH_SIZE, and no more numbers in
        or out than MAX_TENSOR_ELEMENTS. 0 when even one instance is over."""
        per_instance = max(compiled.numbers_in, compiled.numbers_out)
        return min(self.max_batch_size, self.max_tensor_elements // per_instance)

    def body_bytes(self, compiled) -> int:
        if self.max_content_length is not None:
            return self.max_content_length
        return max(DEFAULT_BODY_BYTES, JSON_BYTES_PER_NUMBER * compiled.numbers_in)

    def batch_message(self, size: int, compiled) -> str:
        """Why a batch of ``size`` is refused, naming the setting that bounds it."""
        limit = self.max_batch(compiled)
        if limit == self.max_batch_size:
            return f"Batch of {size} instances exceeds MAX_BATCH_SIZE={limit}."
        return (
            f"Batch of {size} instances exceeds this model's limit of {limit}: an instance "
            f"has {compiled.numbers_in:,} numbers in and {compiled.numbers_out:,} out, and a "
            f"request may carry MAX_TENSOR_ELEMENTS={self.max_tensor_elements:,} either way."
        )
