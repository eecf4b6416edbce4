"""A shadow version: a copy of a sampled share of a model's inferences, run after the answer and
compared with it.

The copy never changes or delays an answer. It waits in a short queue
(SHADOW_QUEUE_SIZE); past the bound it is dropped and counted, so a slow shadow
cannot grow memory. One consumer per worker runs what waits as one batch, with
an interpreter of the shadow's own, once the worker's loop has served every
ready connection, and then rests, so that shadow work takes at most
SHADOW_SHARE of the worker's time; a long inference runs in a native thread at
the lowest CPU priority (nice 19). So a client's inference never waits for a
shadow's, and a shadow slower than the clients' rate drops copies rather than
take their CPU.

Each copy is compared output by output: the largest absolute difference, the
largest relative one (``|a - b| / max(|a|, |b|)``), and for a classifier's
scores (a float output of one row of two or more per instance) whether the top
class agrees. Prometheus gets them per model, answering version and shadow
version; the largest disagreement is logged at most once per SHADOW_LOG_SECONDS.
"""

import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
from flask import g, has_app_context

from app.extensions import SHADOW_ABSOLUTE, SHADOW_COPIES, SHADOW_RELATIVE, SHADOW_TOP_CLASS
from app.runtime.model import OFFLOAD_SECONDS, ModelRunner, runtime_for

log = logging.getLogger(__name__)
# How long the consumer gathers copies into one batch once the first arrives.
GATHER_SECONDS = 0.005
# Numbers of an instance's answer and shadow output a disagreement line shows.
LOGGED_NUMBERS = 20


@dataclass(eq=False)
class Copy:
    """One inference to run again on the shadow: its inputs and outputs in signature order."""

    answered_by: ModelRunner
    shadow: ModelRunner
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    request_id: str | None

    @property
    def group(self) -> tuple:
        """Copies with equal groups run as one batch: the same versions, the same shapes
        beside the batch."""
        shapes = tuple(array.shape[1:] for array in self.inputs)
        return id(self.answered_by), id(self.shadow), shapes


class ShadowCopies:
    """One worker's shadow work: a bounded queue and one consumer, which gathers copies for
    GATHER_SECONDS after the first arrives and runs them as batches (at most the shadow's
    largest batch each): a client's request only appends, and the consumer wakes once a
    batch, not once a copy."""

    def __init__(self, size: int, share: float, log_seconds: float):
        self.size, self.share, self.log_seconds = size, share, log_seconds
        # Set by the gevent worker: ``offload`` runs a long inference in a native thread;
        # ``idle`` returns once the loop has served every ready connection.
        self.offload = None
        self.idle = None
        self._waiting: list[Copy] = []
        self._ready = None
        self._runtimes = weakref.WeakKeyDictionary()  # A shadow runner's own interpreter.
        self._metrics: dict[tuple, tuple] = {}
        self._drops: dict[tuple, object] = {}
        self._worst: dict[tuple, dict] = {}
        self._logged: dict[tuple, float] = {}

    def offer(self, copy: Copy) -> None:
        """Queue ``copy``, or drop and count it when the queue is full."""
        if self._ready is None:  # In the worker, at its first copy.
            self._ready = threading.Event()
            threading.Thread(target=self._consume, name="shadow", daemon=True).start()
        waiting = self._waiting
        if len(waiting) >= self.size:
            self._dropped(copy).inc()
            return
        waiting.append(copy)
        if len(waiting) == 1:
            self._ready.set()

    def _consume(self) -> None:
        lower_priority()
        while True:
            self._ready.wait()
            time.sleep(GATHER_SECONDS)
            if self.idle is not None:
                self.idle()
            self._ready.clear()
            waiting, self._waiting = self._waiting, []
            started = time.perf_counter()
            for batch in batches(waiting):
                self._run(batch)
            waiting = batch = None  # Their arrays go now, not when the next copy arrives.
            busy = time.perf_counter() - started
            time.sleep(busy * (1 / self.share - 1))  # At most SHADOW_SHARE of the time.

    def _run(self, batch: list[Copy]) -> None:
        shadow = batch[0].shadow
        try:
            inputs = [
                np.concatenate(arrays) for arrays in zip(*(c.inputs for c in batch), strict=True)
            ]
            run = lowered(self.runtime(shadow))
            if self.offload and shadow.expected_seconds(inputs) >= OFFLOAD_SECONDS:
                outputs = self.offload(run, inputs)
            else:
                outputs = run(inputs)
            self._compare(batch, outputs)
        except Exception as error:  # noqa: BLE001 - a shadow's failure is only counted.
            counted(batch[0], "failed").inc(len(batch))
            log.warning(
                "shadow version %s of model %s failed on %d copies: %s",
                shadow.number,
                shadow.name,
                len(batch),
                (str(error).splitlines() or [""])[0][:200],
                extra={"model": shadow.name, "request_id": batch[0].request_id},
            )

    def runtime(self, shadow: ModelRunner):
        """The shadow's own interpreter in this worker, built at its first copy (in the loop:
        building captures the process's stderr), so clients' inferences on the same version
        keep theirs. TensorFlow's runtime is thread-safe and shared."""
        runtime = self._runtimes.get(shadow)
        if runtime is None:
            if shadow.compiled.runtime == "tensorflow":
                runtime = shadow._runtime
            else:
                runtime = runtime_for(shadow.compiled, 1)
            self._runtimes[shadow] = runtime
        return runtime

    def _compare(self, batch: list[Copy], shadowed: list[np.ndarray]) -> None:
        first = batch[0]
        pair = (first.answered_by.name, str(first.answered_by.number), str(first.shadow.number))
        rows = [len(copy.outputs[0]) for copy in batch]
        starts = np.cumsum([0, *rows[:-1]])
        specs = first.answered_by.compiled.outputs
        for position, (spec, shadow) in enumerate(zip(specs, shadowed, strict=True)):
            answer = np.concatenate([copy.outputs[position] for copy in batch])
            if answer.shape != shadow.shape:
                raise ValueError(
                    f"output {spec.name!r} has shape {list(shadow.shape)}, "
                    f"the answer's {list(answer.shape)}"
                )
            if answer.dtype.kind not in "biuf" or not answer.size:
                continue  # Strings are not compared.
            absolute_metric, relative_metric, agrees, differs = self._children(pair, spec.name)
            a = answer.astype(np.float64).reshape(len(answer), -1)
            b = shadow.astype(np.float64).reshape(len(answer), -1)
            absolute = np.abs(a - b)
            scale = np.maximum(np.abs(a), np.abs(b))
            relative = np.divide(absolute, scale, out=np.zeros_like(absolute), where=scale > 0)
            largest = np.maximum.reduceat(absolute.max(axis=1), starts)
            for value in largest.tolist():
                absolute_metric.observe(value)
            for value in np.maximum.reduceat(relative.max(axis=1), starts).tolist():
                relative_metric.observe(value)
            if answer.dtype.kind == "f" and answer.ndim == 2 and answer.shape[1] >= 2:
                agreeing = int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
                agrees.inc(agreeing)
                differs.inc(len(a) - agreeing)
            worst = int(largest.argmax())
            if largest[worst] > 0:
                copy, begin = batch[worst], int(starts[worst])
                end = begin + rows[worst]
                row = begin + int(absolute[begin:end].max(axis=1).argmax())
                where = (row, row - begin, copy.request_id)
                self._note(pair, spec.name, float(largest[worst]), answer, shadow, where)
        counted(first, "compared").inc(len(batch))

    def _dropped(self, copy: Copy):
        """The pair's counter of dropped copies, looked up once: a full queue drops often."""
        key = (id(copy.answered_by), id(copy.shadow))
        counter = self._drops.get(key)
        if counter is None:
            counter = self._drops[key] = counted(copy, "dropped")
        return counter

    def _children(self, pair: tuple, output: str) -> tuple:
        """The pair's metrics for ``output``, looked up once."""
        key = (*pair, output)
        children = self._metrics.get(key)
        if children is None:
            children = self._metrics[key] = (
                SHADOW_ABSOLUTE.labels(*key),
                SHADOW_RELATIVE.labels(*key),
                SHADOW_TOP_CLASS.labels(*key, "true"),
                SHADOW_TOP_CLASS.labels(*key, "false"),
            )
        return children

    def _note(self, pair, output, largest, answer, shadow, where) -> None:
        """Keep the pair's largest disagreement (``where``: its row in the batch, instance in
        its copy, and the copy's request id); log it once SHADOW_LOG_SECONDS have passed
        since the pair's last line."""
        row, instance, request_id = where
        worst = self._worst.get(pair)
        if worst is None or largest > worst["absolute_difference"]:
            self._worst[pair] = worst = {
                "output": output,
                "absolute_difference": largest,
                "instance": instance,
                "answer": answer[row].reshape(-1)[:LOGGED_NUMBERS].tolist(),
                "shadow": shadow[row].reshape(-1)[:LOGGED_NUMBERS].tolist(),
                "copy_request_id": request_id,
            }
        now = time.monotonic()
        if now - self._logged.get(pair, -self.log_seconds) >= self.log_seconds:
            self._logged[pair] = now
            del self._worst[pair]
            model, version, shadow_version = pair
            log.info(
                "shadow disagreement",
                extra={
                    "model": model,
                    "model_version": int(version),
                    "shadow_version": int(shadow_version),
                    **worst,
                },
            )


def batches(copies: list[Copy]) -> list[list[Copy]]:
    """``copies`` in batches of one group each, at most the shadow's largest batch."""
    groups: dict[tuple, list[list[Copy]]] = {}
    for copy in copies:
        chunks = groups.setdefault(copy.group, [[]])
        rows = sum(len(each.inputs[0]) for each in chunks[-1])
        if chunks[-1] and rows + len(copy.inputs[0]) > copy.shadow.bundle.max_batch:
            chunks.append([])
        chunks[-1].append(copy)
    return [chunk for chunks in groups.values() for chunk in chunks]


def lowered(runtime):
    """``runtime`` called at the lowest priority of the thread it runs in."""

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        lower_priority()
        return runtime(inputs)

    return run


def offer(answered_by: ModelRunner, inputs: dict, outputs: dict) -> None:
    """After an inference: a copy for the model's shadow, for its ``sample`` of inferences."""
    shadow, sample, copies = answered_by.shadow
    if sample < 1.0 and random.random() >= sample:
        return
    compiled = answered_by.compiled
    copies.offer(
        Copy(
            answered_by,
            shadow,
            [inputs[spec.name] for spec in compiled.inputs],
            [outputs[spec.name] for spec in compiled.outputs],
            g.get("request_id") if has_app_context() else None,
        )
    )


def counted(copy: Copy, outcome: str):
    answered_by = copy.answered_by
    return SHADOW_COPIES.labels(
        answered_by.name, str(answered_by.number), str(copy.shadow.number), outcome
    )


def lower_priority() -> None:
    """Run the calling native thread at the lowest CPU priority (Linux's nice is per thread);
    never the process's main thread, which serves the clients."""
    thread = threading.get_native_id()
    if thread != os.getpid():
        os.setpriority(os.PRIO_PROCESS, thread, 19)
