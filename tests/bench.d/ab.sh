#!/bin/bash
# A/B throughput of two copilot-edge binaries on the bench config, alternating runs.
#
#   tests/bench.d/ab.sh OLD_BIN NEW_BIN [RUNS] [SECONDS]
#
# Each run starts the binary on a fresh state dir (bench token, JSON logs to file, no
# per-client connection bound), warms up for 2 s, then runs wrk (2 threads, 64 connections,
# tests/bench.d/diagnose.lua) and reads the server's CPU time from /proc/PID/stat, so the
# figures are req/s and server CPU microseconds per request. EXTRA (env) is appended to the
# config, e.g. EXTRA=$'[engine]\nmax_documents = 1'. Prints one line per run and the ratio
# of mean req/s (new/old). Needs wrk, curl and bc.
set -euo pipefail
OLD=$1 NEW=$2 RUNS=${3:-6} DUR=${4:-6}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LUA=$HERE/diagnose.lua
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SHA=$(printf %s secret-token-technician | sha256sum | cut -d' ' -f1)
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
one() {  # BIN -> "rps cpu_us_per_request body_bytes"
  local bin=$1 d port pid t0 t1 n rps size
  d=$(mktemp -d "$WORK/run.XXXX")
  mkdir -p "$d/state" "$d/logs"
  port=$(free_port)
  printf '[paths]\nstate_dir = "%s/state"\nlog_dir = "%s/logs"\n[[auth.tokens]]\nuser_id = "technician-42"\nsha256 = "%s"\n[server]\nmax_connections_per_client = 0\n[logging]\nlevel = "info"\nfile = true\n%s\n' \
    "$d" "$d" "$SHA" "${EXTRA:-}" >"$d/c.toml"
  "$bin" serve --config "$d/c.toml" --listen "127.0.0.1:$port" >"$d/out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.05; done
  wrk -t2 -c64 -d2s -s "$LUA" "http://127.0.0.1:$port/v1/diagnose" >/dev/null
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  wrk -t2 -c64 -d"${DUR}s" -s "$LUA" "http://127.0.0.1:$port/v1/diagnose" >"$d/wrk.txt"
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  n=$(awk '/requests in/ {print $1}' "$d/wrk.txt")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$d/wrk.txt")
  if grep -q 'Non-2xx' "$d/wrk.txt"; then echo "non-2xx answers from $bin" >&2; exit 1; fi
  size=$(curl -s -H 'Authorization: Bearer secret-token-technician' -H 'Content-Type: application/json' \
    -d "$(sed -n "s/^wrk.body *= *'\(.*\)'$/\1/p" "$LUA")" "http://127.0.0.1:$port/v1/diagnose" | wc -c)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$rps $(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l | xargs printf %.1f) $size"
}
so=0 sn=0
for i in $(seq "$RUNS"); do
  read -r r c b < <(one "$OLD"); so=$((so + r)); echo "run $i old: $r req/s, $c us CPU/request, body $b B"
  read -r r c b < <(one "$NEW"); sn=$((sn + r)); echo "run $i new: $r req/s, $c us CPU/request, body $b B"
done
echo "new/old mean req/s: $(echo "$sn / $so" | bc -l | xargs printf %.2f)"
