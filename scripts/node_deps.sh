#!/usr/bin/env bash
# Installs what the SDK tests (test/t/004_sdks.pl, test/collector/) need on
# Debian 12, as root or with sudo: Node.js and npm (from Debian, only when
# node/npm are not on PATH already), Chromium (when /usr/bin/chromium is
# missing), then the pinned npm packages of test/collector with `npm ci`.
# playwright-core drives Debian's Chromium: no browser is downloaded.
# Safe to run again: `npm ci` is skipped while node_modules matches the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

pkgs=()
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
if [ ${#pkgs[@]} -gt 0 ]; then
    ensure_packages "${pkgs[@]}"
fi

dir=test/collector
stamp=$dir/node_modules/.pg_cdp-package-lock.json
if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
    exit 0
fi
echo "== npm ci in $dir ($(node --version), npm $(npm --version 2>/dev/null))"
# No package of the tests needs an install script; optional dependencies are
# only rudder-sdk-node's Redis queue, which the tests do not use.
(cd "$dir" && npm ci --ignore-scripts --omit=optional --no-audit --no-fund --loglevel=error)
cp "$dir/package-lock.json" "$stamp"
