#!/usr/bin/env bash
# Install wrk for bench/ (tox -e bench runs this first): Debian bookworm's package, pinned by
# version and sha256 (scripts/install-pinned-deb.sh; needs root to install).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-pinned-deb.sh wrk "4.1.0-3+b2" \
  "b0206dc74df85365a248ddac2433c0ee3f210579fc5ed83758e73354bb1bbefb" \
  /usr/bin/wrk "70fccc21498d8c55400deab34fa2fc913b65bfe45fa28fc944a0921026ee58f0"
wrk --version 2>&1 | head -1 || true
