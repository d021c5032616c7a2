# Throwaway PostgreSQL servers for the demo and the benchmarks.
#   start_server DIR [extra postgresql.conf lines...]
#       initdb in DIR/data (owned by postgres when run as root), pick a free
#       port, preload pg_cdp and pg_cron, start; sets PGHOST, PGPORT, PGUSER,
#       PGDATABASE=postgres and SERVER_DIR.
#   stop_server          stop the server started last
#   psql_q ARGS...       psql quiet, stop on error

find_free_port() {
    local p
    for p in $(seq 55432 55532); do
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$p" ]; then
            echo $p
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

start_server() {
    local dir=$1
    shift
    SERVER_DIR=$dir
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
        PGUSER=postgres
    else
        PGUSER=$(id -un)
    fi
    rm -rf "$dir/data"
    $AS_PG "$PG_BIN/initdb" -D "$dir/data" -U "$PGUSER" -E UTF8 --no-locale -A trust >/dev/null
    PGPORT=$(find_free_port)
    {
        echo "port = $PGPORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'pg_cdp,pg_cron'"
        echo "cron.database_name = 'postgres'"
        echo "cron.use_background_workers = on"
        echo "max_locks_per_transaction = 128"
        echo "shared_buffers = 512MB"
        echo "max_wal_size = 4GB"
        echo "checkpoint_timeout = 30min"
        echo "logging_collector = off"
        for line in "$@"; do echo "$line"; done
    } | $AS_PG tee -a "$dir/data/postgresql.conf" >/dev/null
    $AS_PG "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
    export PGHOST=$dir PGPORT PGUSER PGDATABASE=postgres
}

stop_server() {
    [ -n "${SERVER_DIR:-}" ] && [ -d "$SERVER_DIR/data" ] || return 0
    $AS_PG "$PG_BIN/pg_ctl" -D "$SERVER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

psql_q() {
    $AS_PG env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" PGDATABASE="$PGDATABASE" \
        "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"
}
