#!/usr/bin/env bash
# The same binary under two configurations, side by side: a server with configuration A, then one
# with B, alternating three times, each asked by wrk (own process) for three 4 s rounds by 2,000
# distinct pilots (rate limits off, so every answer is a cache hit), with the server's CPU per
# request from `perf stat -e task-clock`. For a change of configuration where the stsgate-bench
# harness's fixed order of runs (each against a bare handler in the bench's own process) is in
# doubt. An empty path means no configuration file (the embedded default).
#
# Usage: scripts/ab-config.sh path/to/stsgate config-a.toml|"" config-b.toml|""   (needs wrk, perf)
set -euo pipefail
bin=$1 a=$2 b=$3
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
export STSGATE_AUTH__JWT_SECRET=stsgate-ab-secret-0123456789abcdef-0123456789
export STSGATE_LIMITS__SUBJECT_PER_MINUTE=0
unset RUST_LOG
for i in $(seq 0 1999); do
  "$bin" token --data-dir "$dir/tokens" --workspace bench --username "pilot-$i" 2>/dev/null
done | python3 -c '
import sys
t = sys.stdin.read().split()
print("local tokens = {\n" + "".join("  \"%s\",\n" % x for x in t) + "}")
print("local i = 0\nrequest = function()\n  i = i % #tokens + 1")
print("  return wrk.format(\"POST\", nil, {[\"x-auth-token\"] = tokens[i], [\"content-length\"] = \"0\"}, nil)\nend")
' >"$dir/pilots.lua"

run() { # label config
  rm -rf "$dir/data"
  if [ -n "$2" ]; then export STSGATE_CONFIG=$2; else unset STSGATE_CONFIG; fi
  "$bin" --data-dir "$dir/data" serve --http-listen 127.0.0.1:0 --mqtt-embedded-listen 127.0.0.1:0 \
    --storage-local-listen 127.0.0.1:0 >"$dir/banner" 2>"$dir/serve.log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q "HTTP API" "$dir/banner" 2>/dev/null && break; sleep 0.1; done
  port=$(grep -o 'http://127.0.0.1:[0-9]*' "$dir/banner" | head -1 | cut -d: -f3)
  url=http://127.0.0.1:$port/storage/api/v1/workspaces/bench/sts
  wrk -t1 -c32 -d2s -s "$dir/pilots.lua" "$url" >/dev/null
  for round in 1 2 3; do
    perf stat -e task-clock -p "$pid" -o "$dir/perf" -- sleep 4 &
    local stat=$!
    out=$(wrk -t1 -c32 -d4s -s "$dir/pilots.lua" "$url")
    wait "$stat"
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    refused=$(awk '/Non-2xx/{print $NF}' <<<"$out")
    ms=$(awk '/task-clock/{gsub(",", "", $1); print $1}' "$dir/perf")
    echo "$1 round $round: $rps req/s, refused ${refused:-0}, server CPU $(python3 -c "print(round($ms * 1000 / ($rps * 4), 1))") us per request"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
for _ in 1 2 3; do run A "$a"; run B "$b"; done
