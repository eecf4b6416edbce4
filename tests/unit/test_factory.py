"""The application factory and the committed OpenAPI document."""

from pathlib import Path

import yaml

from app import create_app

ROOT = Path(__file__).resolve().parents[2]


def test_config_overrides_apply():
    assert not create_app().testing
    assert create_app({"TESTING": True}).testing


def test_a_fresh_app_has_no_model_until_one_is_loaded():
    app = create_app()
    assert app.extensions["serving"].runners == {}
    assert app.test_client().get("/health/ready").status_code == 503


def test_openapi_yaml_matches_the_app(app):
    """Regenerate with `make openapi` when this fails."""
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    assert committed == app.test_client().get("/openapi.json").get_json()


def test_every_schema_field_has_a_description_and_an_example(app):
    spec = app.test_client().get("/openapi.json").get_json()
    ours = {
        k: v
        for k, v in spec["components"]["schemas"].items()
        if k not in ("Error", "PaginationMetadata")
    }
    for name, schema in ours.items():
        for field, prop in schema["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
            assert {"example", "allOf", "anyOf"} & set(prop), f"{name}.{field} has no example"
