"""The documentation's examples, run against a real Gunicorn: what the docs show is what
the server answers.

Each example is a file under docs_src/ that the pages include (pymdownx.snippets),
as FastAPI's docs_src/ are: a ``.console`` session (``$ command`` lines, each
followed by its output) or a Python client script with its output in a ``.out``
file beside it. The README's ``console`` blocks are run too. Commands and scripts
run as written, with ``localhost:8000`` and ``localhost:8081`` pointed at the
test server, which serves the model ``make train`` writes (the notebook's
recipe: 500 epochs, seed 42), or the two-input model for ``predict/multi``.

Outputs are compared as text, except numbers, which agree within ``RTOL``
(training gives other last digits on another CPU: docs/models/training.md),
and ``…``, which stands for any text (hashes, times, paths). With
``UPDATE_DOCS_EXAMPLES=1`` an empty output is filled in from the server instead.
Run alone with ``.venv/bin/pytest tests/integration/test_docs_examples.py``.
"""

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.grpc import open_inference_pb2 as pb
from tests.integration.clients import oip_call
from tests.integration.conftest import start
from tests.integration.server import ROOT

EXAMPLES = ROOT / "docs_src"
RTOL, ATOL = 1e-5, 1e-6
UPDATE = os.environ.get("UPDATE_DOCS_EXAMPLES") == "1"
# Examples run against the two-input, two-output model rather than the notebook's.
MULTI = {"predict/multi.console"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass
class Step:
    command: str
    expected: str


def session(text: str) -> list[Step]:
    """``$ command`` lines (``\\`` continues one) and the output under each."""
    steps, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        command = lines[index].removeprefix("$ ")
        while command.endswith("\\"):
            index += 1
            command += "\n" + lines[index]
        index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        steps.append(Step(command, "\n".join(output).strip()))
    return steps


def session_text(steps: list[Step]) -> str:
    return "\n".join(f"$ {step.command}\n{step.expected}\n" for step in steps)


def agrees(expected: str, actual: str) -> bool:
    """Text equal but for numbers (within RTOL) and ``…`` (any text)."""
    pattern, numbers = [], []
    for part in re.split(r"(…)", expected.strip()):
        if part == "…":
            pattern.append(".*?")
            continue
        position = 0
        for match in NUMBER.finditer(part):
            pattern.append(re.escape(part[position : match.start()]) + f"({NUMBER.pattern})")
            numbers.append(float(match.group()))
            position = match.end()
        pattern.append(re.escape(part[position:]))
    found = re.fullmatch("".join(pattern), actual.strip(), re.DOTALL)
    return bool(found) and all(
        math.isclose(want, float(got), rel_tol=RTOL, abs_tol=ATOL)
        for want, got in zip(numbers, found.groups(), strict=True)
    )


def pointed_at(text: str, server) -> str:
    """The example with its addresses pointed at the test server."""
    return text.replace("localhost:8000", server.url.removeprefix("http://")).replace(
        "localhost:8081", server.grpc_target
    )


def run(command: list[str], timeout: float = 60) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def check_session(path: Path, text: str, server) -> str:
    """Run every step; the text with empty outputs filled in (in update mode)."""
    steps = session(text)
    for step in steps:
        actual = run(["bash", "-c", pointed_at(step.command, server)])
        if UPDATE and not step.expected:
            step.expected = actual.strip()
            continue
        assert agrees(step.expected, actual), (
            f"{path.name}: $ {step.command}\ndocumented:\n{step.expected}\nanswered:\n{actual}"
        )
    return session_text(steps)


@pytest.fixture(scope="module")
def servers(notebook_model_dir, multi_model_dir, tmp_path_factory):
    """The server ``make serve`` runs after ``make train``, and one for the two-input model."""
    started = {
        "notebook": start(notebook_model_dir, tmp_path_factory),
        "multi": start(multi_model_dir, tmp_path_factory),
    }
    yield started
    for server in started.values():
        server.stop()


CONSOLES = sorted(EXAMPLES.rglob("*.console"))
SCRIPTS = sorted(EXAMPLES.rglob("*.py"))


@pytest.mark.parametrize("path", CONSOLES, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_each_console_example_answers_as_documented(path, servers):
    name = str(path.relative_to(EXAMPLES))
    server = servers["multi" if name in MULTI else "notebook"]
    updated = check_session(path, path.read_text(), server)
    if UPDATE:
        path.write_text(updated)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_each_client_script_prints_what_is_documented(path, servers, tmp_path):
    script = tmp_path / path.name
    script.write_text(pointed_at(path.read_text(), servers["notebook"]))
    actual = run([sys.executable, str(script)])
    expected_path = path.with_suffix(".out")
    if UPDATE and not expected_path.exists():
        expected_path.write_text(actual)
    assert agrees(expected_path.read_text(), actual), f"{path.name} printed:\n{actual}"


def readme_sessions() -> list[str]:
    return re.findall(r"```console\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


@pytest.mark.parametrize("index", range(len(readme_sessions())))
def test_the_readmes_examples_answer_as_documented(index, servers):
    check_session(ROOT / "README.md", readme_sessions()[index], servers["notebook"])


def test_the_readmes_python_examples_are_files_the_tests_run():
    text = (ROOT / "README.md").read_text()
    scripts = {path.read_text().strip() for path in SCRIPTS}
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks and all(block.strip() in scripts for block in blocks)


def test_the_readme_is_the_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 300, f"the README has {len(lines)} lines"
    opening = "\n".join(lines[:30])
    assert "make serve" in opening and "make test" in opening, "the two commands come first"


def documented_metrics() -> set[str]:
    pages = ("operations/metrics.md", "operations/monitoring.md")
    text = "".join((ROOT / "docs" / page).read_text() for page in pages)
    return set(
        re.findall(r"^\| `(model_server_[a-z_]+)` \| (?:counter|gauge|histogram) \|", text, re.M)
    )


def test_the_documented_metrics_are_the_exported_ones(servers):
    server = servers["notebook"]
    request = pb.ModelInferRequest(model_name="linear")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(2)
    oip_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)
    requests.post(f"{server.url}/predict", json={"instances": [1, 10]}, timeout=10)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.name.startswith("model_server_")
    }
    assert exported == documented_metrics()


def test_every_page_shows_its_examples_inline_exactly_as_the_tests_run_them():
    # Inline, not included: GitHub shows a page's text as it is (tools/inline_examples.py).
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = page.read_text()
        assert '--8<-- "' not in text, f"{page}: an include line GitHub would show raw"
        for name in re.findall(r"^<!-- docs_src/(.+) -->$", text, re.MULTILINE):
            assert (EXAMPLES / name).is_file(), f"{page} shows {name}, which is missing"
    check = subprocess.run(
        [sys.executable, "tools/inline_examples.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout


def test_every_example_file_is_shown_on_a_page():
    shown = set()
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        shown |= set(re.findall(r"^<!-- docs_src/(.+) -->$", page.read_text(), re.MULTILINE))
    files = {str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*") if path.is_file()}
    assert files <= shown, sorted(files - shown)
