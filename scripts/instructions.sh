#!/usr/bin/env bash
# Instructions the stsgate binary executes per answered `POST …/sts` cache hit (all threads, user
# space), counted by valgrind's callgrind. The count is the same for the same binary whatever else
# the machine runs, where wrk's figures move ±10% between rounds with other tenants' load, so it
# tells what a change does to the work a request takes; BENCHMARKS.md quotes it beside wrk's.
# Caches and system calls are not in it: wrk (`cargo bench --bench stsgate-bench -- wrk`) stays the
# measure of speed.
#
# Usage: scripts/instructions.sh [path/to/stsgate] [requests]   (needs valgrind and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/stsgate}
requests=${2:-4000}
pilots=1000
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt install valgrind)" >&2; exit 1; }

dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
export STSGATE_AUTH__JWT_SECRET=stsgate-instructions-secret-0123456789abcdef
unset RUST_LOG

for i in $(seq 0 $((pilots - 1))); do
  "$bin" token --data-dir "$dir/data" --workspace bench --username "pilot-$i" 2>/dev/null
done >"$dir/tokens"

# Instrumentation starts off and is switched on after a warm-up, so start-up is not counted.
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  "$bin" --data-dir "$dir/data" serve --http-listen 127.0.0.1:0 \
  --mqtt-embedded-listen 127.0.0.1:0 --storage-local-listen 127.0.0.1:0 \
  >"$dir/banner" 2>"$dir/serve.log" &
pid=$!
for _ in $(seq 1 300); do grep -q "HTTP API" "$dir/banner" 2>/dev/null && break; sleep 0.2; done
port=$(grep -o 'http://127.0.0.1:[0-9]*' "$dir/banner" | head -1 | cut -d: -f3)
[ -n "$port" ] || { cat "$dir/serve.log" >&2; exit 1; }

ask() {
  python3 - "$port" "$requests" "$dir/tokens" <<'EOF'
import http.client, sys
port, n, tokens = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read().split()
connections = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    c = connections[i % len(connections)]
    c.request("POST", "/storage/api/v1/workspaces/bench/sts",
              headers={"x-auth-token": tokens[i % len(tokens)], "content-length": "0"})
    answer = c.getresponse()
    answer.read()
    assert answer.status == 200, answer.status
EOF
}
ask
callgrind_control --instr=on "$pid" >/dev/null 2>&1
ask
callgrind_control --dump "$pid" >/dev/null 2>&1
counted=$(cat "$dir"/callgrind.out.* | awk '/^summary:/ {print $2}' | sort -n | tail -1)
echo "$bin: $((counted / requests)) instructions per cache hit ($requests requests, $pilots pilots)"
