#!/usr/bin/env bash
# Installs what the test suite needs that cargo cannot — the Mosquitto broker the external-broker
# tests start on free ports of their own, the `aws` CLI and boto3 (PyPI) that the store tests use
# as foreign S3 clients, moto (PyPI), the AWS STS and S3 peer, parliament (PyPI), the IAM policy
# linter, and the PostgreSQL and MariaDB servers of the SQL registry tests — then runs every test.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

have_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}
if ! have_mosquitto || ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "== installing mosquitto and its clients (Debian packages)"
  apt_install mosquitto mosquitto-clients
fi

# wrk: the bench's external load generator (its smoke run is part of `cargo test`).
if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk (Debian package)"
  apt_install wrk
fi

# PostgreSQL and MariaDB for the SQL device registry tests: used where they run (127.0.0.1:5432,
# user postgres, database test; 127.0.0.1:3306, root without a password), else installed and
# started with that set-up. TEST_POSTGRES_ADDR / TEST_MARIADB_ADDR (host:port) point the
# tests at other servers instead.
if [ -z "${TEST_POSTGRES_ADDR:-}" ] && ! port_open 5432; then
  echo "== starting PostgreSQL"
  ls /etc/postgresql/*/main/pg_hba.conf >/dev/null 2>&1 || apt_install postgresql
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    grep -q "stsgate-test" "$hba" ||
      $sudo sed -i '1i host all all 127.0.0.1/32 trust # stsgate-test' "$hba"
  done
  $sudo service postgresql start || true
  wait_port 5432
  $sudo su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\" | grep -q 1 || createdb test"
fi
if [ -z "${TEST_MARIADB_ADDR:-}" ] && ! port_open 3306; then
  echo "== starting MariaDB"
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  # (the init script may report failure while its own health check is refused; the port decides)
  $sudo service mariadb start || $sudo service mysql start || true
  wait_port 3306
  $sudo mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); CREATE DATABASE IF NOT EXISTS test;"
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

# The disk-full and read-only tests mount small tmpfs file systems: as root they must run.
# (Not an STSGATE_ name: every stsgate process the tests start would read it as a config key.)
if [ "$(id -u)" = 0 ]; then export TMPFS_TESTS=1; fi

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
