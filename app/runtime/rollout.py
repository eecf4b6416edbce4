"""A model's rollout over the versions it serves: labels, weights and a shadow."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rollout:
    """A model's rollout over the versions it serves: ``labels`` (name: number), ``weights``
    (number: percent of the requests that name no version), and the ``shadow`` version
    that gets a copy of a ``sample`` of its inferences."""

    labels: dict[str, int] = field(default_factory=dict)
    weights: dict[int, int] = field(default_factory=dict)
    shadow: int | None = None
    sample: float = 0.0

    def entry(self) -> dict:
        """The rollout as a ``version_policy.json`` entry writes it."""
        entry: dict = {}
        if self.labels:
            entry["labels"] = dict(self.labels)
        if self.weights:
            entry["weights"] = {str(number): percent for number, percent in self.weights.items()}
        if self.shadow is not None:
            entry["shadow"] = {"version": self.shadow, "sample": self.sample}
        return entry
