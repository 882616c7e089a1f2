#!/usr/bin/env bash
# Knowledge-bundle rollout under load (issue 30's budgets), run by tests/bench:
#   tests/bench.d/kb_swap.sh BIN OUT_MD DURATION
# Two signed bundles of the full sample knowledge base (43 SOPs; the second also carries the
# asset register, so their content differs) are served by a real nginx (Debian's nginx-light,
# ETags on); the release agent polls it every second. wrk (2 threads, 16 connections) posts
# diagnose requests for DURATION s without swaps, then for DURATION s while the bundle on nginx
# is replaced every 1.5 s and the agent swaps its engine each time. Then the agent idles 10 s
# with nothing new, and nginx's access log gives the bytes of one unchanged check (request +
# 304 response). Writes a Markdown table to OUT_MD; exits non-zero when something does not work
# (no swap, a non-2xx answer, a socket error), never on a figure (targets are printed).
set -uo pipefail
BIN=$1 OUT=$2 DUR=${3:-10}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LUA=$ROOT/tests/bench.d/diagnose.lua
TOKEN=secret-token-technician
T=$(mktemp -d /tmp/copilot-kb-swap.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
die() { echo "kb_swap: $*" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx not installed (apt-get install nginx-light)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- two signed bundles
"$BIN" kb keygen "$T/key" >/dev/null 2>&1 || die "kb keygen"
for v in A B; do
  mkdir -p "$T/src$v/knowledge"
  cp "$ROOT"/config/knowledge/*.md "$T/src$v/knowledge/"
  [ "$v" = B ] && cp "$ROOT/config/assets.csv" "$T/src$v/"
  printf 'version = "bench-%s"\n[[smoke]]\nquestion = "compressor overheating and tripping"\nexpect = "SOP-CMP-001"\n' "$v" >"$T/src$v/bundle.toml"
  "$BIN" kb pack "$T/src$v" -o "$T/$v.kb" >/dev/null || die "kb pack $v"
  "$BIN" kb sign "$T/$v.kb" --key "$T/key" >/dev/null || die "kb sign $v"
done
BUNDLE_BYTES=$(stat -c %s "$T/A.kb")

# --- nginx
NPORT=$(port)
mkdir -p "$T/www" "$T/nginx/logs"
cp "$T/A.kb" "$T/www/bundle.kb"
cat >"$T/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log;
events { worker_connections 64; }
http {
  log_format sizes '\$status \$request_length \$bytes_sent';
  access_log $T/nginx/logs/access.log sizes;
  client_body_temp_path $T/nginx/body; proxy_temp_path $T/nginx/proxy;
  fastcgi_temp_path $T/nginx/fastcgi; uwsgi_temp_path $T/nginx/uwsgi; scgi_temp_path $T/nginx/scgi;
  server { listen 127.0.0.1:$NPORT; root $T/www; }
}
EOF
"$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' 2>"$T/nginx/stderr" &
PIDS+=($!)

# --- the agent
APORT=$(port)
mkdir -p "$T/agent"
cat >"$T/agent/copilot-edge.toml" <<EOF
[paths]
state_dir = "$T/agent/state"
log_dir = "$T/agent/logs"
[[auth.tokens]]
user_id = "technician-42"
sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
[server]
max_connections_per_client = 0
[kb]
url = "http://127.0.0.1:$NPORT/bundle.kb"
poll_interval_secs = 1
public_keys = ["$(cat "$T/key.pub")"]
EOF
"$BIN" serve -c "$T/agent/copilot-edge.toml" --listen "127.0.0.1:$APORT" >/dev/null 2>"$T/agent/stderr" &
PIDS+=($!)
BASE=http://127.0.0.1:$APORT
running() { curl -s --max-time 5 "$BASE/metrics" | sed -n 's/^copilot_edge_knowledge_info{.*version="\([^"]*\)".*/\1/p'; }
wait_version() {  # VERSION TIMEOUT_S
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do [ "$(running)" = "$1" ] && return 0; sleep 0.05; done
  return 1
}
wait_version bench-A 60 || die "the agent did not take bundle A (running: $(running)); $(tail -3 "$T/agent/stderr")"

wrk_run() {  # NAME -> $T/NAME.txt
  wrk -t2 -c16 -d"${DUR}s" --latency -s "$LUA" "$BASE/v1/diagnose" >"$T/$1.txt" 2>&1
}
to_ms='function ms(v) { if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000;
                        if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0;
                        if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000; return v + 0 }'
fig() {  # FILE -> "rps p50 p99 max non2xx sockerr"
  awk "$to_ms"'
    /^Requests\/sec:/ {rps = $2}
    $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
    $1 == "Latency" && NF >= 4 && !max {max = ms($4)}
    /Non-2xx/ {split($0, a, ":"); n = a[2] + 0}
    /Socket errors/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i + 0}
    END {printf "%.0f %.2f %.2f %.2f %d %d\n", rps, p50, p99, max, n, s}' "$1"
}

wrk_run steady
read -r S_RPS S_P50 S_P99 S_MAX S_N S_E <<<"$(fig "$T/steady.txt")"

# --- swaps under load
wrk_run swaps & WRK=$!
swaps=0; next=B
end=$((SECONDS + DUR - 2))
while [ $SECONDS -lt $end ]; do
  sleep 1.5
  cp "$T/$next.kb" "$T/www/.tmp" && mv "$T/www/.tmp" "$T/www/bundle.kb"
  if wait_version "bench-$next" 10; then
    swaps=$((swaps + 1)); [ "$next" = B ] && next=A || next=B
  else
    echo "kb_swap: bundle $next not taken within 10 s" >&2; break
  fi
done
wait "$WRK"
read -r W_RPS W_P50 W_P99 W_MAX W_N W_E <<<"$(fig "$T/swaps.txt")"
mapfile -t apply_ms < <(grep -h '"event":"kb_applied"' "$T"/agent/logs/*.log 2>/dev/null | tail -n +2 | sed -n 's/.*"ms":\([0-9]*\).*/\1/p')
APPLY_MED=$(printf '%s\n' "${apply_ms[@]}" | sort -n | awk '{a[NR] = $1} END {print NR ? a[int((NR + 1) / 2)] : "?"}')

# --- an idle minute's checks: nothing new, so 304s only
lines_before=$(wc -l <"$T/nginx/logs/access.log")
sleep 10
POLL=$(tail -n +"$((lines_before + 1))" "$T/nginx/logs/access.log" | awk '$1 == 304 {n++; b += $2 + $3} END {if (n) printf "%d %.0f", n, b / n; else print "0 0"}')
read -r POLL_N POLL_B <<<"$POLL"

{
  echo "| figure | value | target |"
  echo "|---|---:|---|"
  echo "| bundle (43 SOPs, signed, gzip'd tar) | $BUNDLE_BYTES bytes | |"
  echo "| engine build + smoke on the gateway (median of the swaps, \`kb_applied\` ms) | $APPLY_MED ms | |"
  echo "| swaps during ${DUR} s of load | $swaps | |"
  echo "| diagnose without swaps: req/s, p50 / p99 / max ms | $S_RPS, $S_P50 / $S_P99 / $S_MAX | |"
  echo "| diagnose during swaps: req/s, p50 / p99 / max ms | $W_RPS, $W_P50 / $W_P99 / $W_MAX | no request over 50 ms |"
  echo "| failed requests during swaps (non-2xx + socket errors) | $((W_N + W_E)) | 0 |"
  echo "| bytes per unchanged check (request + 304 response, nginx log, $POLL_N checks) | $POLL_B | < 1,000 |"
} >"$OUT"
cat "$OUT"
[ "$swaps" -ge 2 ] && [ "$W_N" = 0 ] && [ "$W_E" = 0 ] && [ "$S_N" = 0 ] && [ "$S_E" = 0 ] && [ "$POLL_N" -gt 0 ]
