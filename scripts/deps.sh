#!/usr/bin/env bash
# Installs what building and testing pg_cdp needs (Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
base_packages
