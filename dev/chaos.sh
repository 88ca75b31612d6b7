#!/usr/bin/env bash
# `make chaos`: the fault suite, on a Kafka and ClickHouse of its own. It
# kills the broker and freezes ClickHouse, so it never touches the shared
# dev stack (19092/19000 and its secured ports), where other people's tests run: the chaos stack
# has its own ports and state directory, is started here and stopped again
# at the end, on failure and on Ctrl-C. First dev/restart-test.sh checks
# that the stack scripts themselves survive kill -9; then sluice-chaos runs
# the suite and writes docs/reliability.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export SLUICE_DEV_STATE=${SLUICE_CHAOS_STATE:-$SLUICE_CACHE/chaos-stack}
export SLUICE_DEV_KAFKA_PORT=${SLUICE_CHAOS_KAFKA_PORT:-29092}
export SLUICE_DEV_KAFKA_CONTROLLER_PORT=${SLUICE_CHAOS_KAFKA_CONTROLLER_PORT:-29093}
export SLUICE_DEV_CLICKHOUSE_PORT=${SLUICE_CHAOS_CLICKHOUSE_PORT:-29000}
export SLUICE_DEV_CLICKHOUSE_HTTP_PORT=${SLUICE_CHAOS_CLICKHOUSE_HTTP_PORT:-28123}
export SLUICE_DEV_KAFKA_SASL_PORT=${SLUICE_CHAOS_KAFKA_SASL_PORT:-29094}
export SLUICE_DEV_KAFKA_SSL_PORT=${SLUICE_CHAOS_KAFKA_SSL_PORT:-29095}
export SLUICE_DEV_CLICKHOUSE_SECURE_PORT=${SLUICE_CHAOS_CLICKHOUSE_SECURE_PORT:-29440}
export SLUICE_DEV_OWNER="chaos-$$"

trap '"$DEV_DIR/down.sh" --if-owner "$SLUICE_DEV_OWNER"' EXIT
trap 'exit 130' INT TERM

began=$SECONDS
"$DEV_DIR/up.sh" || die "starting the chaos stack failed"
# up.sh writes the owner only if it started something; a chaos stack left
# running by an interrupted run is the suite's all the same.
echo "$SLUICE_DEV_OWNER" > "$SLUICE_DEV_STATE/owner"
"$DEV_DIR/restart-test.sh" || die "dev/restart-test.sh failed: the stack scripts do not survive kill -9"
status=0
(cd "$REPO_DIR" && go run ./loadtest/cmd/sluice-chaos -doc "${SLUICE_CHAOS_DOC:-docs/reliability.md}") || status=$?
log "make chaos took $((SECONDS - began)) s"
exit $status
