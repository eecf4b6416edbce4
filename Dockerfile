# syntax=docker/dockerfile:1
# The model server: Gunicorn + Flask serving the trained Keras model.
#   docker build -t model-server .
#   docker run -p 8000:8000 model-server
# The default model is trained in the build; mount another store at /models
# (-v "$PWD/models:/models:ro") to serve it instead.

# The base images; tools/build-base-images.sh builds local stand-ins from
# Debian's packages for machines that reach no container registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# ReDoc and Swagger UI from npm, so the docs pages work without a CDN.
FROM ${NODE_IMAGE} AS docs-assets
WORKDIR /assets
COPY tools/fetch-docs-assets.sh ./
RUN ./fetch-docs-assets.sh docs

# Two virtualenvs: one with TensorFlow trains and compiles the default model,
# the other holds only the serving install (no TensorFlow) for the runtime.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
COPY data ./data
COPY --from=docs-assets /assets/docs ./app/static/docs
RUN python -m venv /opt/train \
 && /opt/train/bin/pip install --no-cache-dir '.[train]' \
 && /opt/train/bin/python -m training --name linear --output-dir /models --epochs 500 --seed 42
# The serving venv needs neither pip nor setuptools at run time, nor LiteRT's
# WebGPU accelerator (19 MB; the CPU interpreter never loads it).
# SERVE_EXTRAS=registry adds MLflow's client, to serve MODEL_URI=models:/... ;
# SERVE_EXTRAS=tensorflow the TensorFlow runtime, for versions LiteRT cannot run;
# SERVE_EXTRAS=s3 boto3, to serve MODEL_DIR=s3://... (several: SERVE_EXTRAS=registry,s3).
ARG SERVE_EXTRAS=""
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".${SERVE_EXTRAS:+[$SERVE_EXTRAS]}" \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes setuptools pip \
 && rm /opt/venv/lib/python3.11/site-packages/ai_edge_litert/libLiteRtWebGpuAccelerator.so

# The runtime: no TensorFlow, no compilers, no npm, a non-root user.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/models/linear \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    MODEL_CACHE_DIR=/tmp/model-cache
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY --from=build /models /models
COPY wsgi.py gunicorn.conf.py ./
USER 10001:10001
# REST, and gRPC (the Open Inference Protocol, KServe's port convention).
EXPOSE 8000 8081
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=2)"]
# Exec form: Gunicorn is PID 1 and gets SIGTERM itself; logs go to stdout.
CMD ["python", "-m", "app.serve"]
