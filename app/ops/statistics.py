"""Per-version inference statistics: the Open Inference Protocol's statistics extension, as
Triton serves it, kept in Prometheus counters so that every worker's requests add up.

An inference request is counted once it reaches a version (``Inference``, set by the
core's ``infer``): ``success`` or ``fail`` with its whole time, and for a success its
phases, ``queue`` (waiting for the worker's turn), ``compute_input`` (reading and
checking the inputs), ``compute_infer`` (the runtime) and ``compute_output``
(writing the answer). A request refused before it reaches a version (a malformed
body, an unknown model) is not a version's.
"""

import os
import time
from dataclasses import dataclass

from prometheus_client import REGISTRY

from app.extensions import BATCH_SIZE, INFERENCE_SECONDS, INFERENCES, LAST_INFERENCE
from app.ops import metrics_files

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
# Triton's statistics this server has nothing to report for (it caches no answers).
UNUSED = ("cache_hit", "cache_miss")


@dataclass
class Inference:
    """One request's inference: the version, and when it started and ended (perf_counter)."""

    name: str
    version: str
    started: float
    ended: float = 0.0
    waited: float = 0.0
    computed: float = 0.0


# Each version's counters, looked up once: this runs on every inference request.
_children: dict[tuple[str, str], tuple] = {}


def record(inference: Inference, request_started: float, ok: bool) -> None:
    """Count ``inference``'s request, which started at ``request_started`` and ends now."""
    now = time.perf_counter()
    key = (inference.name, inference.version)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            INFERENCES.labels(*key, "success"),
            INFERENCES.labels(*key, "fail"),
            INFERENCE_SECONDS.labels(*key, "success"),
            INFERENCE_SECONDS.labels(*key, "fail"),
            *(INFERENCE_SECONDS.labels(*key, phase) for phase in PHASES),
            LAST_INFERENCE.labels(*key),
        )
    succeeded, failed, success, fail, queue, read, compute, write, last = children
    if not ok:
        failed.inc()
        fail.inc(now - request_started)
        return
    succeeded.inc()
    success.inc(now - request_started)
    queue.inc(inference.waited)
    read.inc(inference.started - request_started)
    compute.inc(inference.computed)
    write.inc(now - inference.ended)
    last.set(time.time())


def model_statistics(versions: list[tuple[str, str]]) -> list[dict]:
    """Each (model, version)'s statistics over every worker, in the protocol's shape."""
    samples = collected()
    stats = []
    for name, version in versions:
        values = samples.get((name, version), {})

        def duration(count_key, seconds_key, values=values) -> dict:
            seconds = values.get(seconds_key, 0.0)
            return {"count": int(values.get(count_key, 0)), "ns": round(seconds * 1e9)}

        inference_stats = {
            "success": duration("success", ("seconds", "success")),
            "fail": duration("fail", ("seconds", "fail")),
            **{phase: duration("success", ("seconds", phase)) for phase in PHASES},
            **{unused: {"count": 0, "ns": 0} for unused in UNUSED},
        }
        stats.append(
            {
                "name": name,
                "version": version,
                "last_inference": round(values.get("last", 0.0) * 1000),
                "inference_count": int(values.get("instances", 0)),
                "execution_count": int(values.get("executions", 0)),
                "inference_stats": inference_stats,
                "batch_stats": [],
                "memory_usage": [],
            }
        )
    return stats


def collected() -> dict[tuple[str, str], dict]:
    """The statistics' samples by (model, version), summed over every worker."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        with metrics_files.locked(directory, exclusive=False):
            metrics = list(metrics_files.registry(directory).collect())
    else:
        metrics = list(REGISTRY.collect())
    wanted = {
        INFERENCES._name,
        INFERENCE_SECONDS._name,
        LAST_INFERENCE._name,
        BATCH_SIZE.metric._name,
    }
    found: dict[tuple[str, str], dict] = {}
    for metric in metrics:
        if metric.name not in wanted:
            continue
        for sample in metric.samples:
            labels = sample.labels
            key = (labels.get("model"), labels.get("version"))
            values = found.setdefault(key, {})
            if sample.name == f"{INFERENCES._name}_total":
                values[labels["outcome"]] = sample.value
            elif sample.name == f"{INFERENCE_SECONDS._name}_total":
                values["seconds", labels["phase"]] = sample.value
            elif sample.name == LAST_INFERENCE._name:
                values["last"] = max(values.get("last", 0.0), sample.value)
            elif sample.name == f"{BATCH_SIZE.metric._name}_sum":
                values["instances"] = sample.value
            elif sample.name == f"{BATCH_SIZE.metric._name}_count":
                values["executions"] = sample.value
    return found
