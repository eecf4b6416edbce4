"""Log a training run to MLflow and register its version: ``python -m training --register``.

The run gets every parameter, the loss of every epoch as a metric history,
the data file, the whole version directory (model, compiled artifact,
metadata) and the git commit as tags; the version directory is then
registered as a new version of the registered model named like the store's
model, and ``--alias`` points an alias (``production``) at it.
"""

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
