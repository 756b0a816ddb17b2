# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: build the quartstack wheel alone (its dependencies come from requirements.lock),
# with the build backend pinned and hash-checked too (scripts/build-requirements.lock).
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN --mount=type=bind,source=scripts/build-requirements.lock,target=/build-requirements.lock \
    pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: \
      -r /build-requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
      --wheel-dir /dist .

# Stage 2: a slim runtime with only the installed wheels, running as a non-root user.
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="quartstack" \
      org.opencontainers.image.description="Async Quart service integrating Vault, PostgreSQL, MySQL, MongoDB, Redis and RabbitMQ" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/quartstack/quartstack"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PORT=8000
# The dependencies are exactly requirements.lock's pins (uvloop included), each wheel checked
# against its sha256 there (`tox -e lock` regenerates it); then quartstack's wheel without
# resolving anything, and pip check proves the set is complete. pip compiles the bytecode at
# install time, so nothing is written at run time.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    --mount=type=bind,source=requirements.lock,target=/requirements.lock \
    pip install --no-cache-dir --require-hashes --only-binary=:all: -r /requirements.lock \
 && pip install --no-cache-dir --no-deps /dist/quartstack-*.whl \
 && pip check \
 && groupadd --system --gid 10001 quartstack \
 && useradd --system --uid 10001 --gid quartstack --no-create-home --shell /usr/sbin/nologin quartstack \
 && mkdir -p /app
# /app belongs to root and the app user cannot write it; only /tmp is writable, so
# the root filesystem can be mounted read-only (the chart mounts an emptyDir on /tmp).
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live\", timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["quartstack"]
CMD ["serve", "--bind", "0.0.0.0:8000"]

# Stage 3 (skaffold's dev profile only): the sources on PYTHONPATH, owned by the app
# user, so file sync can replace them and `--reload` restarts the server.
FROM runtime AS dev
COPY --chown=10001:10001 src /app/src
ENV PYTHONPATH=/app/src
CMD ["serve", "--bind", "0.0.0.0:8000", "--reload"]

# The default target (last stage): the production runtime.
FROM runtime AS release
