#!/usr/bin/env bash
# make test: install what is missing, build, install, and run every suite
# (pg_regress, isolation, TAP), each in its own throwaway preloaded server.
# The suites run from a copy of the tree owned by the server's user.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
set -e
base_packages
scripts/node_deps.sh      # node, npm, chromium and the SDKs for the collector's tests
build_and_install
set +e

work=$(mktemp -d /tmp/pg_cdp_test.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
copy_tree_for_postgres "$work/tree"

status=0
for suite in regress isolation tap; do
    echo "== suite: $suite"
    if ! $AS_PG make -C "$work/tree" -s PG_CONFIG="$PG_CONFIG" "installcheck-$suite"; then
        status=1
        for f in "$work/tree/regression.diffs" "$work/tree/test/output_iso/regression.diffs"; do
            [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
        done
        if [ "$suite" = tap ]; then
            for f in "$work"/tree/tmp_check/log/regress_log_*; do
                [ -f "$f" ] && { echo "---- $f"; tail -n 60 "$f"; }
            done
        fi
    fi
done
if [ $status -eq 0 ]; then
    echo "== all suites passed"
else
    echo "== some suites FAILED"
fi
exit $status
