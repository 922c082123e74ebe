#!/usr/bin/env bash
# Installs what the test suite needs that cargo cannot — the Mosquitto broker the external-broker
# tests start on free ports of their own, the `aws` CLI and boto3 (PyPI) that the store tests use
# as foreign S3 clients, moto (PyPI), the AWS STS and S3 peer, and parliament (PyPI), the IAM
# policy linter — then runs every test.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

have_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}

if ! have_mosquitto; then
  echo "== installing mosquitto (Debian package)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

python_peers_ready() {
  command -v aws >/dev/null 2>&1 && command -v moto_server >/dev/null 2>&1 &&
    python3 -c "import boto3, parliament, flask" >/dev/null 2>&1
}
if ! python_peers_ready; then
  echo "== installing awscli, boto3, moto[server] and parliament (PyPI)"
  pip=(python3 -m pip install --quiet --disable-pip-version-check awscli boto3 "moto[server]" parliament)
  "${pip[@]}" || "${pip[@]}" --user || "${pip[@]}" --break-system-packages
  export PATH="$HOME/.local/bin:$PATH"
  hash -r
fi

echo "== cargo test"
# --all-targets: unit, integration and bench-harness tests (the crate has no doc-tests).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
