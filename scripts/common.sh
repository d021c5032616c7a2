# Shared by the scripts: where PostgreSQL lives, how to become root and the
# server's user, and installing what is missing.
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
export PG_CONFIG

if [ "$(id -u)" -eq 0 ]; then
    SUDO=
    AS_PG="runuser -u postgres --"
else
    SUDO=sudo
    AS_PG=
fi

# ensure_packages pkg...: install the Debian packages that are missing.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

base_packages() {
    ensure_packages make gcc postgresql-15 postgresql-server-dev-15 postgresql-15-cron \
        libipc-run-perl libpq-dev libicu-dev libssl-dev libmicrohttpd-dev libjansson-dev zlib1g-dev curl \
        libcurl4-openssl-dev python3-aiosmtpd
}

# build_and_install: compile with -Werror and install into PostgreSQL.
build_and_install() {
    echo "== building pg_cdp"
    make -s PG_CONFIG="$PG_CONFIG"
    $SUDO make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# copy_tree_for_postgres DIR: a copy of the tree that the server's user owns,
# because CI's clone may sit below a directory that user cannot enter.
copy_tree_for_postgres() {
    local dest=$1
    mkdir -p "$dest"
    tar --exclude=./.git --exclude='./tmp_*' --exclude=./results --exclude=./test/output_iso --exclude=./.demo --exclude=./regression.diffs --exclude=./regression.out \
        --exclude=./node_modules -cf - . | tar -C "$dest" -xf -
    if [ -n "$SUDO" ] || [ "$(id -u)" -eq 0 ]; then
        $SUDO chown -R postgres:postgres "$dest"
    fi
    chmod 755 "$dest"
}
