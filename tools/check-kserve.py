"""Check deploy/kserve/*.yaml against KServe's CRD schemas (deploy/kserve/schemas/).

Strict, as the API server is not: a field the schema does not know is an
error here (Kubernetes would silently prune it), so a misspelt field fails.
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1] / "deploy" / "kserve"


def strict(schema):
    """The schema with unknown properties refused wherever it lists the known ones."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


def main() -> int:
    failures = 0
    for path in sorted(ROOT.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            version = document["apiVersion"].split("/")[-1]
            schema_path = ROOT / "schemas" / f"{document['kind']}-{version}.json"
            if not schema_path.exists():
                print(f"{path.name}: no vendored schema for {document['kind']} {version}")
                failures += 1
                continue
            schema = strict(json.loads(schema_path.read_text()))
            schema["properties"]["metadata"] = {"type": "object"}
            errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
            for error in errors:
                where = "/".join(str(part) for part in error.absolute_path)
                print(f"{path.name}: {document['kind']} {where}: {error.message}")
            failures += len(errors)
            if not errors:
                print(f"{path.name}: {document['kind']} {document['metadata']['name']} ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
