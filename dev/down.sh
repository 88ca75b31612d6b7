#!/usr/bin/env bash
# Stops the dev stack. With --if-owner NAME, stops it only if dev/up.sh was
# run with SLUICE_DEV_OWNER=NAME when it started it (so a stack someone else
# brought up is left running). Data stays; `make dev-clean` wipes it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = --if-owner ]; then
  [ "$(cat "$SLUICE_DEV_STATE/owner" 2>/dev/null)" = "${2:?--if-owner needs a name}" ] || exit 0
fi

stop() { # name pidfile
  local pidfile=$2 pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # A clean Kafka shutdown takes a few seconds; past 30 s something is stuck.
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$1 did not stop in 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop Kafka "$KAFKA_STATE/pid"
stop ClickHouse "$CLICKHOUSE_STATE/pid"
rm -f "$SLUICE_DEV_STATE/owner"
