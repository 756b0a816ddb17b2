# syntax=docker/dockerfile:1
# The base of both stages, in one place. It is the tag alone: this repository is maintained
# without a Docker engine or registry access, so no digest could be verified for it, and a
# digest copied from elsewhere might be stale or wrong. Pin it where the image is built:
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<that digest> .
# or write the same `tag@sha256:<digest>` here (tests/chart/test_image.py checks its form).
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
# VERSION has no default: the version lives in pyproject.toml alone, and the build passes
# it: --build-arg VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open(
# "pyproject.toml", "rb"))["project"]["version"])')"; left unset, the label is empty rather
# than a stale copy. `quartstack --version` reads the installed wheel's metadata.
ARG VERSION
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
    HOST=0.0.0.0 \
    PORT=8000
# The dependencies are exactly requirements.lock's pins (uvloop and the uvicorn extra
# included, so SERVER=uvicorn needs no other image), each wheel checked against its sha256
# there (`tox -e lock` regenerates it); then quartstack's wheel without resolving anything,
# and pip check proves the set is complete. pip compiles the bytecode at install time, so
# nothing is written at run time.
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
# No --bind: serve listens on the HOST and PORT settings, the same PORT the HEALTHCHECK reads.
CMD ["serve"]

# Stage 3 (skaffold's dev profile only): the sources on PYTHONPATH, owned by the app
# user, so file sync can replace them and `--reload` restarts the server.
FROM runtime AS dev
COPY --chown=10001:10001 src /app/src
ENV PYTHONPATH=/app/src
CMD ["serve", "--reload"]

# The default target (last stage): the production runtime.
FROM runtime AS release
