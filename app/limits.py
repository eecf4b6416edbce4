"""What one request may carry, derived from the served model's signature and the settings."""

from dataclasses import dataclass

from app.artifact import DEFAULT_MAX_MODEL_BYTES

# Bytes of JSON a client may need for one float32 number: "-1.2345678901234567e-05, ".
JSON_BYTES_PER_NUMBER = 32
DEFAULT_BODY_BYTES = 1024 * 1024
DEFAULT_TENSOR_ELEMENTS = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The request bounds the settings give; ``for_model`` turns them into one model's.

    ``max_content_length`` None means "derived": 1 MiB, or one instance of the
    model's inputs written as JSON at ``JSON_BYTES_PER_NUMBER``, whichever is larger.
    """

    max_batch_size: int = 1000
    max_tensor_elements: int = DEFAULT_TENSOR_ELEMENTS
    max_content_length: int | None = None
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES

    def max_batch(self, inputs, outputs) -> int:
        """The most instances a request may carry: MAX_BATCH_SIZE, and no more numbers in
        or out than MAX_TENSOR_ELEMENTS. 0 when even one instance is over."""
        per_instance = max(sum(spec.size for spec in inputs), sum(spec.size for spec in outputs))
        return min(self.max_batch_size, self.max_tensor_elements // per_instance)

    def body_bytes(self, inputs) -> int:
        if self.max_content_length is not None:
            return self.max_content_length
        one_instance = JSON_BYTES_PER_NUMBER * sum(spec.size for spec in inputs)
        return max(DEFAULT_BODY_BYTES, one_instance)

    def batch_message(self, size: int, inputs, outputs) -> str:
        """Why a batch of ``size`` is refused, naming the setting that bounds it."""
        limit = self.max_batch(inputs, outputs)
        if limit == self.max_batch_size:
            return f"Batch of {size} instances exceeds MAX_BATCH_SIZE={limit}."
        numbers_in = sum(spec.size for spec in inputs)
        numbers_out = sum(spec.size for spec in outputs)
        return (
            f"Batch of {size} instances exceeds this model's limit of {limit}: an instance "
            f"has {numbers_in:,} numbers in and {numbers_out:,} out, and a request may carry "
            f"MAX_TENSOR_ELEMENTS={self.max_tensor_elements:,} either way."
        )
