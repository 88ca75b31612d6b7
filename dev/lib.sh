#!/usr/bin/env bash
# Shared settings of the dev stack scripts. Every path and port can be
# overridden from the environment; the defaults keep everything under one
# cache directory outside the repository.
set -euo pipefail

DEV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$DEV_DIR/.." && pwd)

# Downloads (Kafka jars, Go tools) and stack state live here, never in git.
SLUICE_CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
# Data, logs and pid files of the running stack.
SLUICE_DEV_STATE=${SLUICE_DEV_STATE:-$SLUICE_CACHE/stack}

# Non-default ports so the stack never collides with a system-wide Kafka or
# ClickHouse on the same machine.
SLUICE_DEV_KAFKA_PORT=${SLUICE_DEV_KAFKA_PORT:-19092}
SLUICE_DEV_KAFKA_CONTROLLER_PORT=${SLUICE_DEV_KAFKA_CONTROLLER_PORT:-19093}
SLUICE_DEV_CLICKHOUSE_PORT=${SLUICE_DEV_CLICKHOUSE_PORT:-19000}
SLUICE_DEV_CLICKHOUSE_HTTP_PORT=${SLUICE_DEV_CLICKHOUSE_HTTP_PORT:-18123}
# Seconds to wait for each part to become ready.
SLUICE_DEV_START_TIMEOUT=${SLUICE_DEV_START_TIMEOUT:-90}

KAFKA_STATE=$SLUICE_DEV_STATE/kafka
CLICKHOUSE_STATE=$SLUICE_DEV_STATE/clickhouse

log() { printf '[dev] %s\n' "$*" >&2; }
die() { printf '[dev] error: %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive FILE: true when FILE names a live process.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# kafka_jars_dir: where the broker jars for the current pom are cached; the
# directory name carries the pom's hash, so editing the pom fetches anew.
kafka_jars_dir() {
  local sum
  sum=$(sha256sum "$DEV_DIR/kafka/pom.xml" | cut -c1-12)
  echo "$SLUICE_CACHE/kafka-jars/$sum"
}

# as_root CMD…: run CMD as root (directly, or through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it by hand or run as root)"; fi
}
