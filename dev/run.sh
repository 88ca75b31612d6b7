#!/usr/bin/env bash
# `make run`: brings up the dev stack and Sluice's three services, then runs
# the demo (a receiver that prints webhooks, an endpoint, sample events, and
# their attempt rows from ClickHouse). Ctrl-C stops the services, and the
# stack too if this script started it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

owner="run-$$"
bin="$SLUICE_CACHE/run/bin"
logs="$SLUICE_DEV_STATE/logs"
# Fixed local ports for the services, overridable like the stack's.
SLUICE_RUN_API_PORT=${SLUICE_RUN_API_PORT:-8080}
SLUICE_RUN_OPS_PORT_BASE=${SLUICE_RUN_OPS_PORT_BASE:-8081}

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping the services"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  "$DEV_DIR/down.sh" --if-owner "$owner"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SLUICE_DEV_OWNER=$owner "$DEV_DIR/up.sh"

log "building the services into $bin"
mkdir -p "$bin" "$logs"
(cd "$REPO_DIR" && go build -o "$bin/" ./services/ingest ./services/sender ./services/logwriter ./loadtest/cmd/sluice-demo) \
  || die "go build failed"

export SLUICE_KAFKA_BROKERS="127.0.0.1:$SLUICE_DEV_KAFKA_PORT"
export SLUICE_CLICKHOUSE_ADDRS="127.0.0.1:$SLUICE_DEV_CLICKHOUSE_PORT"
# A local stack seals endpoint secrets with the public development key and
# gets a fresh admin key each run (printed below); production sets both.
export SLUICE_INSECURE_DEV_SECRETS_KEY=true
# The demo receiver listens on 127.0.0.1, which the sender refuses unless
# allowed (its egress guard keeps webhooks off internal addresses).
export SLUICE_EGRESS_ALLOW=127.0.0.1/32
export SLUICE_ADMIN_KEY=${SLUICE_ADMIN_KEY:-admin_$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}

port=$SLUICE_RUN_OPS_PORT_BASE
declare -A ops
for svc in ingest sender logwriter; do
  ops[$svc]="127.0.0.1:$port"
  SLUICE_OPS_ADDR=${ops[$svc]} SLUICE_API_ADDR="127.0.0.1:$SLUICE_RUN_API_PORT" \
    "$bin/$svc" >"$logs/$svc.log" 2>&1 &
  pids+=($!)
  port=$((port + 1))
done

for svc in ingest sender logwriter; do
  deadline=$((SECONDS + 60))
  until curl -fsS "http://${ops[$svc]}/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 20 "$logs/$svc.log" >&2
      die "$svc is not ready after 60 s; read $logs/$svc.log"
    fi
    sleep 0.3
  done
  log "$svc ready (ops http://${ops[$svc]})"
done

cat <<MSG

Sluice is running.
  API (ingest)      http://127.0.0.1:$SLUICE_RUN_API_PORT   (OpenAPI: /openapi.json)
  admin key         $SLUICE_ADMIN_KEY
  health, metrics   http://${ops[ingest]}/readyz  http://${ops[sender]}/metrics  http://${ops[logwriter]}/metrics
  service logs      $logs/{ingest,sender,logwriter}.log
  Kafka             127.0.0.1:$SLUICE_DEV_KAFKA_PORT   e.g. kcat -b 127.0.0.1:$SLUICE_DEV_KAFKA_PORT -L
  ClickHouse        clickhouse-client --port $SLUICE_DEV_CLICKHOUSE_PORT -q 'SELECT * FROM sluice.attempts FINAL FORMAT Vertical'

MSG
"$bin/sluice-demo" &
pids+=($!)
wait "${pids[-1]}"
