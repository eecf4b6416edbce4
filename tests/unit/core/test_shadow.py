"""app/core/shadow.py: copies batched by versions and shapes, compared output by output."""

from types import SimpleNamespace

import numpy as np
from prometheus_client import REGISTRY

from app.core.shadow import Copy, ShadowCopies, batches
from app.runtime.artifact import TensorSpec


def version(number: int, outputs=(("y", (-1, 1)),), max_batch=1000):
    return SimpleNamespace(
        name="unit-shadow",
        number=number,
        bundle=SimpleNamespace(max_batch=max_batch),
        compiled=SimpleNamespace(
            outputs=tuple(TensorSpec(name, shape, "float32") for name, shape in outputs)
        ),
    )


def copy(answered_by, shadow, rows: list, outputs: list) -> Copy:
    inputs = [np.array(rows, np.float32).reshape(len(rows), -1)]
    answer = [np.array(values, np.float32).reshape(len(rows), -1) for values in outputs]
    return Copy(answered_by, shadow, inputs, answer, "request-1")


def sample(name: str, output: str, **labels) -> float:
    labels = {"model": "unit-shadow", "version": "1", "shadow": "2", "output": output, **labels}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_copies_run_in_batches_of_one_pair_of_versions_and_shapes_within_the_largest_batch():
    one, two, three = version(1), version(2, max_batch=3), version(3)
    copies = [
        copy(one, two, [1.0, 2.0], [[1, 2]]),
        copy(one, two, [3.0], [[3]]),
        copy(three, two, [4.0], [[4]]),  # Another answering version.
        copy(one, two, [5.0], [[5]]),  # Past the shadow's largest batch of 3.
    ]
    copies.append(Copy(one, two, [np.zeros((1, 2), np.float32)], [np.zeros((1, 1))], None))
    grouped = [[copies.index(each) for each in batch] for batch in batches(copies)]
    assert grouped == [[0, 1], [3], [2], [4]]


def test_each_copy_adds_its_largest_absolute_and_relative_difference():
    one, two = version(1), version(2)
    batch = [copy(one, two, [1.0, 2.0], [[1, 2]]), copy(one, two, [4.0], [[4]])]
    shadowed = [np.array([[3], [2], [5]], np.float32)]  # Differences 2, 0 | 1.
    before = sample("model_server_shadow_absolute_difference_sum", "y")
    relative = sample("model_server_shadow_relative_difference_sum", "y")
    ShadowCopies(8, 0.1, 3600)._compare(batch, shadowed)
    assert sample("model_server_shadow_absolute_difference_sum", "y") - before == 3.0
    assert sample("model_server_shadow_relative_difference_sum", "y") - relative == (2 / 3 + 1 / 5)
    compared = REGISTRY.get_sample_value(
        "model_server_shadow_copies_total",
        {"model": "unit-shadow", "version": "1", "shadow": "2", "outcome": "compared"},
    )
    assert compared >= 2


def test_a_classifiers_top_class_agreement_is_counted_per_instance():
    scores = (("scores", (-1, 3)),)
    one, two = version(1, scores), version(2, scores)
    batch = [copy(one, two, [1.0, 2.0], [[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]])]
    shadowed = [np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], np.float32)]
    ShadowCopies(8, 0.1, 3600)._compare(batch, shadowed)
    name = "model_server_shadow_top_class_total"
    assert sample(name, "scores", agrees="true") == 1
    assert sample(name, "scores", agrees="false") == 1
