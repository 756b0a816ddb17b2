#!/usr/bin/env bash
# Install one Debian package at a pinned version whose .deb matches a pinned sha256, and check
# the installed binary against its own pinned sha256 (idempotent; needs root to install):
#   scripts/install-pinned-deb.sh PACKAGE VERSION DEB_SHA256 BINARY BINARY_SHA256
# When Debian replaces the version (a point release), the download fails loudly: update the
# pins from `apt-cache show PACKAGE` and `sha256sum BINARY` after installing the new one.
set -euo pipefail
package="$1" version="$2" deb_sha256="$3" binary="$4" binary_sha256="$5"

installed="$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)"
if [ "$installed" != "$version" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "$package: install Debian's $package=$version as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  apt-get update -qq
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package=$version")
  deb="$(ls "$work"/"${package}"_*.deb)"
  echo "$deb_sha256  $deb" | sha256sum --check --quiet
  # A postinst may start a daemon through invoke-rc.d (prometheus does, on :9090); a
  # policy-rc.d that answers 101 forbids that.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends --allow-downgrades "$deb" >/dev/null || status=$?
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" -eq 0 ] || exit "$status"
fi
echo "$binary_sha256  $binary" | sha256sum --check --quiet
name="$(basename "$binary")"
if [ "$(command -v "$name")" != "$binary" ]; then
  echo "$name on PATH is $(command -v "$name"), not the pinned $binary" >&2
  exit 1
fi
