"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (``python -m app.serve`` runs it)."""

from app import create_app

app = create_app()
