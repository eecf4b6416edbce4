"""What a version directory holds as training writes it, and how its files are checked."""

from pathlib import Path

from app.runtime import artifact

MODEL_FILENAME = "model.keras"
# The files of a version whose checksums metadata.json records (and the server checks).
ARTIFACT_FILES = (
    MODEL_FILENAME,
    artifact.FLATBUFFER_FILE,
    artifact.SIGNATURE_FILE,
    artifact.GOLDEN_FILE,
)


def sha256_file(path: Path) -> str:
    """A file's SHA-256, streamed and bounded as the server reads it (app/runtime/artifact.py)."""
    return artifact.sha256_file(path, artifact.MAX_ARTIFACT_BYTES)
