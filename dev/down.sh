#!/usr/bin/env bash
# Stops the dev stack. Data stays; `make dev-clean` wipes it.
#
#   dev/down.sh [--if-owner NAME] [kafka] [clickhouse]
#
# stops only the parts named (both by default). With --if-owner NAME, stops
# only if dev/up.sh was run with SLUICE_DEV_OWNER=NAME when it started the
# stack (so a stack someone else brought up is left running).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = --if-owner ]; then
  [ "$(cat "$SLUICE_DEV_STATE/owner" 2>/dev/null)" = "${2:?--if-owner needs a name}" ] || exit 0
  shift 2
fi
select_parts "$@"

stop() { # name pidfile port…
  local name=$1 pidfile=$2 pid; shift 2
  if pid_alive "$pidfile"; then
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    # A process frozen with SIGSTOP would never act on SIGTERM.
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    # A clean Kafka shutdown takes a few seconds; past 30 s something is stuck.
    for _ in $(seq 1 300); do pid_alive "$pidfile" || break; sleep 0.1; done
    if pid_alive "$pidfile"; then
      log "$name did not stop in 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Gone means its ports are closed too: a start right after must not find
  # them taken.
  wait_gone "$name" "$pidfile" "$@"
  rm -f "$pidfile"
}

if wants kafka; then
  stop Kafka "$KAFKA_STATE/pid" "$SLUICE_DEV_KAFKA_PORT" "$SLUICE_DEV_KAFKA_CONTROLLER_PORT" \
    "$SLUICE_DEV_KAFKA_SASL_PORT" "$SLUICE_DEV_KAFKA_SSL_PORT"
fi
if wants clickhouse; then
  stop ClickHouse "$CLICKHOUSE_STATE/pid" "$SLUICE_DEV_CLICKHOUSE_PORT" "$SLUICE_DEV_CLICKHOUSE_HTTP_PORT" \
    "$SLUICE_DEV_CLICKHOUSE_SECURE_PORT"
fi
# The stack is down only when both parts are.
if ! pid_alive "$KAFKA_STATE/pid" && ! pid_alive "$CLICKHOUSE_STATE/pid"; then rm -f "$SLUICE_DEV_STATE/owner"; fi
