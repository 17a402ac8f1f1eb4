#!/usr/bin/env bash
# Active health checks for Fapiao behind nginx in stream mode: asks each replica's admin port
# for /readyz and writes nginx's upstream lists (upstream-<name>.conf) with the replicas that
# are not ready marked `down`; reloads nginx when a list changes.
#
#   health-check.sh REPLICAS OUTDIR [--once]
#
# REPLICAS: lines `<upstream> <address> <admin address>` (see replicas.txt); OUTDIR: where the
# upstream-<name>.conf files go (nginx.conf includes them). --once writes them and exits
# (before nginx starts); otherwise it checks every FAPIAO_LB_INTERVAL seconds (default 2).
#
# The admin ports take mutual TLS: FAPIAO_LB_CERT and FAPIAO_LB_KEY are a client certificate
# they accept (PEM), FAPIAO_LB_CA the CA of the roles' TLS certificates. FAPIAO_LB_RELOAD is
# the command that reloads nginx (default: nginx -s reload).
set -euo pipefail

replicas=${1:?usage: health-check.sh REPLICAS OUTDIR [--once]}
out=${2:?usage: health-check.sh REPLICAS OUTDIR [--once]}
once=${3:-}
interval=${FAPIAO_LB_INTERVAL:-2}
reload=${FAPIAO_LB_RELOAD:-nginx -s reload}
mkdir -p "$out"

ready() {
  curl -fsS --max-time 2 --cert "${FAPIAO_LB_CERT:?}" --key "${FAPIAO_LB_KEY:?}" \
    --cacert "${FAPIAO_LB_CA:?}" "https://$1/readyz" >/dev/null 2>&1
}

render() {
  local changed=0 name tmp addr admin up
  for name in $(awk '!/^#/ && NF {print $1}' "$replicas" | sort -u); do
    tmp=$(mktemp "$out/.upstream-$name.XXXXXX")
    while read -r up addr admin; do
      [ "$up" = "$name" ] || continue
      if [ "$once" = --once ] || ready "$admin"; then
        echo "server $addr max_fails=2 fail_timeout=5s;" >>"$tmp"
      else
        echo "server $addr down;" >>"$tmp"
      fi
    done < <(grep -v '^#' "$replicas")
    if cmp -s "$tmp" "$out/upstream-$name.conf"; then
      rm -f "$tmp"
    else
      mv "$tmp" "$out/upstream-$name.conf"
      changed=1
    fi
  done
  return $changed
}

if [ "$once" = --once ]; then
  render || true
  exit 0
fi
while true; do
  if ! render; then
    $reload || echo "health-check: reloading nginx failed" >&2
  fi
  sleep "$interval"
done
