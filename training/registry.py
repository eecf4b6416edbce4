"""Log a training run to MLflow and register its version: ``python -m training --register``.

The run gets every parameter, the loss of every epoch as a metric history,
the data file, the whole version directory (model, compiled artifact,
metadata) and the git commit as tags; the version directory is then
registered as a new version of the registered model named like the store's
model, and ``--alias`` points an alias (``production``) at it.
"""

import json
import os
import time

# The directory of the version inside the run's artifacts; the server downloads it.
ARTIFACT_PATH = "model"
# MLflow's own limit on the metrics of one log_batch call.
METRICS_PER_BATCH = 1000


class RegistryError(RuntimeError):
    """The MLflow tracking server or registry refused or could not be reached."""


def check_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise RegistryError("set MLFLOW_TRACKING_URI to the MLflow tracking server's URL")
    return uri


def register(run, alias: str | None = None) -> dict:
    """Log ``run`` (a ``training.train.Run``), register its version; return name, version, run."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=check_tracking_uri())
        experiment = client.get_experiment_by_name(run.name)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(run.name)
        )
        code = run.metadata["code"]
        tracked = client.create_run(
            experiment_id,
            tags={
                "git_commit": str(code["commit"]),
                "git_dirty": str(code["dirty"]),
                "model_version_dir": str(run.path.resolve()),
            },
        )
        run_id = tracked.info.run_id
        params = {key: str(value) for key, value in run.parameters.items()}
        params["data_sha256"] = run.metadata["data"]["sha256"]
        params["data_rows"] = str(run.metadata["data"]["rows"])
        now = int(time.time() * 1000)
        metrics = [Metric("loss", loss, now, step) for step, loss in enumerate(run.losses)]
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
        client.log_metric(run_id, "final_loss", run.losses[-1])
        client.log_artifact(run_id, str(run.data_path), artifact_path="data")
        client.log_artifacts(run_id, str(run.path), artifact_path=ARTIFACT_PATH)
        client.set_terminated(run_id)
        try:
            client.create_registered_model(run.name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"runs:/{run_id}/{ARTIFACT_PATH}"
        version = client.create_model_version(run.name, source, run_id=run_id)
        if alias:
            client.set_registered_model_alias(run.name, alias, version.version)
    except MlflowException as error:
        raise RegistryError(str(error)) from error
    except OSError as error:  # Connection refused, unreachable host.
        raise RegistryError(f"MLflow cannot be reached: {error}") from error
    return {"name": run.name, "version": version.version, "run_id": run_id}


def compile_registered(text: str, policy=None) -> str:
    """Compile a registered model and register the compiled copy as a new version.

    For models a data scientist logs from a notebook (``mlflow.keras.log_model``,
    ``mlflow.tensorflow.log_model``, or any run artifact holding a ``.keras`` or
    ``.h5`` file or a SavedModel): the version is
    downloaded, compiled and checked as any version (app/runtime/artifact.py), logged
    to the same run under ``compiled-v<N>`` and registered as a new version
    tagged ``compiled_from``; an alias in ``text`` moves to it. Registered
    versions never change, so a server's cache of version N stays true.
    ``policy``: the code and graph ops compiling may run (a ``CodePolicy``;
    installed packages only by default). Returns a one-line summary; raises
    ``RegistryError`` or ``ArtifactError``.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.exceptions import MlflowException

    from app.runtime.compiler import compile_version
    from app.runtime.model_code import INSTALLED_ONLY
    from app.runtime.registry import ModelUri, redact, resolve
    from training.version import ARTIFACT_FILES, MODEL_FILENAME, sha256_file

    try:
        uri = ModelUri.parse(text)
    except ValueError as error:
        raise RegistryError(str(error)) from None
    try:
        client = mlflow.MlflowClient(tracking_uri=check_tracking_uri())
        found, download_uri = resolve(client, uri)
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    download_uri, dst_path=str(Path(scratch) / "download")
                )
            )
            saved = find_saved_model(local)
            version_dir = Path(scratch) / "compiled"
            version_dir.mkdir()
            if saved.is_dir():  # A SavedModel: its files are checked by their own checksums.
                shutil.copytree(saved, version_dir / "saved_model")
                copied = []
            else:
                copied = [MODEL_FILENAME if saved.suffix == ".keras" else "model.h5"]
                shutil.copyfile(saved, version_dir / copied[0])
            compile_version(version_dir, policy=policy or INSTALLED_ONLY)
            files = copied + [name for name in ARTIFACT_FILES[1:] if (version_dir / name).is_file()]
            metadata = {
                "name": uri.name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "compiled_from": {
                    "registered_model": uri.name,
                    "version": int(found.version),
                    "run_id": found.run_id,
                    "source": redact(str(found.source)),
                    "file": str(saved.relative_to(local)),
                },
                "artifacts": {name: sha256_file(version_dir / name) for name in files},
            }
            (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
            run_id = found.run_id or client.create_run(_experiment(client, uri.name)).info.run_id
            artifact_path = f"compiled-v{found.version}"
            client.log_artifacts(run_id, str(version_dir), artifact_path=artifact_path)
        compiled = client.create_model_version(
            uri.name,
            f"runs:/{run_id}/{artifact_path}",
            run_id=run_id,
            tags={"compiled_from": str(found.version)},
        )
        if uri.alias:
            client.set_registered_model_alias(uri.name, uri.alias, compiled.version)
    except MlflowException as error:
        raise RegistryError(redact(error.message)) from error
    except OSError as error:
        raise RegistryError(f"MLflow cannot be reached: {redact(str(error))}") from error
    moved = f"; alias {uri.alias!r} moved to it" if uri.alias else ""
    return (
        f"compiled {uri} (version {found.version}) and registered it as version "
        f"{compiled.version}{moved}: serve MODEL_URI=models:/{uri.name}/{compiled.version}"
    )


def find_saved_model(directory):
    """The saved model in a downloaded version, the shallowest: a ``.keras`` file first, then
    ``.h5``, then a SavedModel directory (the ``tensorflow`` flavour's ``tf2model/``)."""
    from app.runtime.artifact import ArtifactError
    from app.runtime.store import SAVED_MODEL_FILE

    def shallowest(paths):
        return sorted(paths, key=lambda p: (len(p.parts), str(p)))

    for suffix in (".keras", ".h5"):
        found = shallowest(directory.rglob(f"*{suffix}"))
        if found:
            return found[0]
    found = shallowest(path.parent for path in directory.rglob(SAVED_MODEL_FILE))
    if found:
        return found[0]
    raise ArtifactError(
        f"no saved model (*.keras, *.h5 or a SavedModel's {SAVED_MODEL_FILE}) in the "
        "registered version"
    )


def _experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)
