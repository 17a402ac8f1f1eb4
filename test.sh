#!/usr/bin/env bash
# The whole test suite, with its own set-up, on a fresh Debian machine:
#
#   ./test.sh [cargo test arguments…]
#
# 1. Installs what the tests check Fapiao against, when missing: the OpenSSL CLI and Python
#    gmssl/cryptography (cryptography), poppler, qpdf, zbar and xmllint (layout files),
#    Chromium with chromedriver (the download portal), nginx with its stream module and
#    PostgreSQL 15 (replicas behind a load balancer), promtool (the alert rules' tests),
#    libfaketime (an agent whose clock is ahead).
# 2. Starts a throwaway PostgreSQL cluster in a temporary directory on a free port (never
#    5432), and stops and removes it on exit, however the script ends.
# 3. Runs the suite on SQLite (the default engine) — the store's suites and the replica test
#    run on PostgreSQL as well in this pass — then the suites that run whole systems (the flow
#    tests, the crash and fault tests) again with every role on PostgreSQL. The fault tests
#    mount a small tmpfs for a full disk: as root (CI), else that one test says it is skipped.
#
# Arguments go to both `cargo test` runs (e.g. `./test.sh -- --test-threads 1`).
set -euo pipefail
cd "$(dirname "$0")"

# Each step says the time and the disk left (a full disk shows as a linker's bus error).
step() { printf '\n=== %s (%ss, %s free)\n' "$1" "$SECONDS" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

step "test tools"
tools=(openssl curl pdftotext pdftoppm pdfdetach pdffonts pdfinfo qpdf zbarimg xmllint chromium chromedriver nginx promtool node)
missing=0
for t in "${tools[@]}"; do command -v "$t" >/dev/null || missing=1; done
[ -d /usr/share/poppler/cMap ] || missing=1
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing=1
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing=1
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing=1
if [ "$missing" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # --no-upgrade keeps OpenSSL at the image's version; poppler-data gives pdftotext its CJK
  # maps (shared/research/ci-recipes.md §1).
  as_root apt-get -o DPkg::Lock::Timeout=300 -q -y update >/dev/null
  as_root apt-get -o DPkg::Lock::Timeout=300 -q -y install --no-install-recommends --no-upgrade \
    openssl curl ca-certificates poppler-utils poppler-data qpdf zbar-tools libxml2-utils \
    chromium chromium-driver nginx libnginx-mod-stream postgresql prometheus faketime nodejs >/dev/null
fi
for t in "${tools[@]}"; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
python3 -m pip install -q --root-user-action=ignore --disable-pip-version-check \
  'gmssl==3.2.2' 'cryptography>=42'
# Schemathesis, and ofdkit (an independent OFD reader), in a virtual environment of their own
# (their dependencies stay out of the tools').
ST_VENV=target/schemathesis-venv
[ -x "$ST_VENV/bin/pip" ] || python3 -m venv "$ST_VENV"
[ -x "$ST_VENV/bin/schemathesis" ] ||
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
[ -x "$ST_VENV/bin/ofdkit" ] ||
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check 'ofdkit==0.2.0'
export FAPIAO_SCHEMATHESIS="$PWD/$ST_VENV/bin/schemathesis"
export FAPIAO_OFDKIT="$PWD/$ST_VENV/bin/ofdkit"

step "PostgreSQL"
PGBIN=/usr/lib/postgresql/15/bin
PGTMP=$(mktemp -d /tmp/fapiao-pg.XXXXXX)
stop_pg() {
  local pid
  pid=$(head -1 "$PGTMP/data/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -m fast -w stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  fi
  rm -rf "$PGTMP"
}
trap stop_pg EXIT INT TERM
if [ "$(id -u)" = 0 ]; then
  # initdb refuses root; the cluster belongs to the postgres user (cd /: it may not read ours).
  chown postgres:postgres "$PGTMP"
  as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
  as_pg() { "$@"; }
fi
PGPORT=${FAPIAO_TEST_PGPORT:-54329}
while (exec 3<>"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; do PGPORT=$((PGPORT + 1)); done
as_pg "$PGBIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
# Durable as production (fsync, synchronous_commit on): the tests check what survives a kill.
as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGTMP -c max_connections=400" >/dev/null
export FAPIAO_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PGPORT"
export FAPIAO_TEST_REQUIRE_POSTGRES=1
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PGPORT"

step "cargo test (SQLite; store suites and replicas on PostgreSQL too)"
cargo test --workspace --locked "$@"

step "cargo test (every role on PostgreSQL)"
# `--workspace --test …`, not `-p …`: the same feature set as the pass above, so its test
# binaries are reused (with `-p` cargo builds fapiao-cli over again, minutes and gigabytes).
FAPIAO_TEST_ENGINE=postgres cargo test --locked --workspace --test flow "$@"
FAPIAO_TEST_ENGINE=postgres cargo test --locked --workspace --test crash "$@"
# How long tax is away matters not to the engine: two minutes on SQLite, 30 s here.
FAPIAO_TEST_ENGINE=postgres FAPIAO_OUTAGE_SECONDS=30 cargo test --locked --workspace --test faults "$@"

step "done"
