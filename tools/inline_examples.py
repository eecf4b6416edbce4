"""Copy each docs_src/ example into the pages that show it, so they read the same on GitHub.

A page marks each example with the file it comes from, just above its fence::

    <!-- docs_src/predict/predict.console -->
    ```console
    ...the file's text...
    ```

``python tools/inline_examples.py`` writes every marked fence from its file (and
turns a ``--8<-- "name"`` include into such a fence); ``--check`` changes nothing
and exits 1 naming each page whose copy differs. The files are what the tests run
(tests/integration/test_docs_examples.py), and ``make test`` runs the check: the
pages cannot drift from them.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs_src"
# A marked fence, or a fence around a snippets include.
MARKED = re.compile(r"<!-- docs_src/(?P<name>[^ ]+) -->\n(?P<fence>```\w*)\n(?:(?!```).*\n)*?```\n")
INCLUDE = re.compile(r'(?P<fence>```\w*)\n--8<-- "(?P<name>[^"]+)"\n```\n')


def inlined(text: str) -> str:
    """The page with every marked fence and include holding its file's text."""

    def fence(match: re.Match) -> str:
        name, opening = match["name"], match["fence"]
        body = (EXAMPLES / name).read_text().rstrip("\n")
        return f"<!-- docs_src/{name} -->\n{opening}\n{body}\n```\n"

    return MARKED.sub(fence, INCLUDE.sub(fence, text))


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def main(argv: list[str]) -> int:
    stale = []
    for page in pages():
        text = page.read_text()
        updated = inlined(text)
        if updated != text:
            stale.append(page.relative_to(ROOT))
            if "--check" not in argv:
                page.write_text(updated)
    if stale and "--check" in argv:
        names = ", ".join(str(page) for page in stale)
        print(f"examples differ from docs_src/ in {names}: run python tools/inline_examples.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
