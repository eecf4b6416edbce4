"""A realistic mix of /predict traffic for locust.

Usage: ``make loadtest`` starts a server and runs this headless with a
bounded duration (see tests/load/run.py). Against a server you run yourself:
``.venv/bin/locust -f tests/load/locustfile.py --host http://127.0.0.1:8000``.
"""

import random

from locust import HttpUser, between, task


def instances(count: int) -> list[float]:
    return [round(random.uniform(-100.0, 100.0), 3) for _ in range(count)]


class PredictUser(HttpUser):
    """A client that mostly asks for single predictions, sometimes for batches."""

    wait_time = between(0.01, 0.05)

    @task(10)
    def predict_one(self):
        self.client.post("/predict", json={"instances": instances(1)}, name="/predict [1]")

    @task(3)
    def predict_rows(self):
        rows = [[value] for value in instances(random.randint(2, 32))]
        self.client.post("/predict", json={"instances": rows}, name="/predict [2-32 rows]")

    @task(1)
    def predict_batch(self):
        self.client.post("/predict", json={"instances": instances(1000)}, name="/predict [1000]")

    @task(1)
    def readiness(self):
        self.client.get("/health/ready", name="/health/ready")
