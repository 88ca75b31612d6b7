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
# The secured doors of the same broker and server (dev/certs.sh makes their
# certificates): SASL over TLS, TLS with a required client certificate, and
# ClickHouse's native protocol over TLS.
SLUICE_DEV_KAFKA_SASL_PORT=${SLUICE_DEV_KAFKA_SASL_PORT:-19094}
SLUICE_DEV_KAFKA_SSL_PORT=${SLUICE_DEV_KAFKA_SSL_PORT:-19095}
SLUICE_DEV_CLICKHOUSE_SECURE_PORT=${SLUICE_DEV_CLICKHOUSE_SECURE_PORT:-19440}
# Seconds to wait for each part to become ready.
SLUICE_DEV_START_TIMEOUT=${SLUICE_DEV_START_TIMEOUT:-90}
# Starts of a part that exits during start-up before up.sh gives up.
SLUICE_DEV_START_TRIES=${SLUICE_DEV_START_TRIES:-3}
# Seconds to wait for a stopped or killed part's process and ports to go.
SLUICE_DEV_STOP_WAIT=${SLUICE_DEV_STOP_WAIT:-30}

KAFKA_STATE=$SLUICE_DEV_STATE/kafka
CLICKHOUSE_STATE=$SLUICE_DEV_STATE/clickhouse
# The throwaway CA, certificates and passwords of the secured listeners.
TLS_STATE=$SLUICE_DEV_STATE/tls
# Users of the secured listeners; their passwords are made once per state
# directory by dev/certs.sh and kept in files, as a Kubernetes Secret would
# mount them.
SLUICE_DEV_SCRAM_USER=sluice
SLUICE_DEV_PLAIN_USER=sluiceplain
SLUICE_DEV_CLICKHOUSE_TLS_USER=sluice_tls

log() { printf '[dev] %s\n' "$*" >&2; }
die() { printf '[dev] error: %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive FILE: true when FILE names a live process that is not on its
# way out. A process sent SIGKILL is still visible to kill -0 until it has
# exited and been reaped, and a thread stuck in a disk write (an fsync) acts
# on the signal only when the write returns: such a process counts as gone,
# so a restart right after a kill -9 starts a new one instead of waiting on
# the dying one.
pid_alive() {
  local pid stat shd
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # After the command, which is in parentheses and may hold spaces: state,
  # ppid, pgrp, session, tty, tpgid, flags (proc(5)).
  set -- ${stat##*) }
  case $1 in Z|X|x) return 1 ;; esac
  # PF_EXITING (0x4): the process is exiting.
  (( ($7 & 0x4) == 0 )) || return 1
  # SIGKILL (signal 9, bit 0x100) sent to the process but not yet acted on.
  shd=$(sed -n 's/^ShdPnd:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
  (( (0x${shd:-0} & 0x100) == 0 ))
}

# wait_gone NAME PIDFILE PORT…: waits, at most SLUICE_DEV_STOP_WAIT
# seconds, until the process PIDFILE names has exited and nothing listens
# on PORT… any more. A process killed with SIGKILL takes a moment to exit
# (a JVM unmapping a large heap takes seconds on a loaded machine), and a
# new one started meanwhile fails to bind its ports or to lock its data
# directory and exits at once.
wait_gone() {
  local name=$1 pidfile=$2; shift 2
  local deadline=$((SECONDS + SLUICE_DEV_STOP_WAIT)) busy port
  while :; do
    busy=""
    if pid_alive "$pidfile"; then busy="process $(cat "$pidfile")"; fi
    for port in "$@"; do
      if port_open "$port"; then busy="$busy port $port"; fi
    done
    [ -z "$busy" ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      die "$name: still busy after ${SLUICE_DEV_STOP_WAIT}s:$busy (another process holds it; set its SLUICE_DEV_*_PORT)"
    fi
    sleep 0.2
  done
}

# kafka_jars_dir: where the broker jars for the current pom are cached; the
# directory name carries the pom's hash, so editing the pom fetches anew.
kafka_jars_dir() {
  local sum
  sum=$(sha256sum "$DEV_DIR/kafka/pom.xml" | cut -c1-12)
  echo "$SLUICE_CACHE/kafka-jars/$sum"
}

# select_parts ARG…: sets parts to the stack parts named (kafka,
# clickhouse), both when none is; wants PART is then true for a part named.
select_parts() {
  parts=("$@")
  [ ${#parts[@]} -gt 0 ] || parts=(kafka clickhouse)
  local part
  for part in "${parts[@]}"; do
    case $part in kafka|clickhouse) ;; *) die "unknown part $part (want kafka or clickhouse)" ;; esac
  done
}
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

# as_root CMD…: run CMD as root (directly, or through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it by hand or run as root)"; fi
}
