#!/usr/bin/env bash
# The stack scripts survive what the fault suite (`make chaos`) does to the
# stack: up.sh brings back a broker killed with kill -9 on its first call,
# stays idempotent, and down.sh/up.sh stop and start ClickHouse alone.
# `make chaos` runs it first, on the chaos stack's own ports; it refuses the
# shared default ports, because it kills the broker it finds there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$SLUICE_DEV_KAFKA_PORT" != 19092 ] && [ "$SLUICE_DEV_CLICKHOUSE_PORT" != 19000 ] \
  || die "restart-test kills the broker: run it on a stack of its own (set SLUICE_DEV_KAFKA_PORT and the others; make chaos does)"

fail() { printf '[restart-test] FAIL: %s\n' "$*" >&2; exit 1; }
pass() { printf '[restart-test] ok: %s\n' "$*" >&2; }
pid_of() { cat "$1/pid" 2>/dev/null || echo none; }
brokers="127.0.0.1:$SLUICE_DEV_KAFKA_PORT"

# kafka_works: the broker leads every partition of sluice.events and takes
# a record with acks=all.
kafka_works() {
  local meta
  meta=$(kcat -b "$brokers" -L -t sluice.events -m 10 2>&1) || { echo "$meta" >&2; return 1; }
  if grep -qiE 'leader -1|error' <<<"$meta" || ! grep -q 'leader 1,' <<<"$meta"; then echo "$meta" >&2; return 1; fi
  echo restart-test | kcat -b "$brokers" -P -t sluice.events.rejected -p 0 -X acks=all -m 20 2>&1 >/dev/null
}
clickhouse_works() { curl -fsS "http://127.0.0.1:$SLUICE_DEV_CLICKHOUSE_HTTP_PORT/ping" >/dev/null 2>&1; }

"$DEV_DIR/up.sh"
kafka_works || fail "the stack is not usable before the test"

old=$(pid_of "$KAFKA_STATE")
log "kill -9 Kafka (pid $old), then dev/up.sh at once"
kill -KILL "$old"
began=$SECONDS
"$DEV_DIR/up.sh" || fail "dev/up.sh after kill -9 of the broker exited $?"
took=$((SECONDS - began))
new=$(pid_of "$KAFKA_STATE")
[ "$new" != "$old" ] || fail "dev/up.sh kept the killed broker's pid $old"
pid_alive "$KAFKA_STATE/pid" || fail "the restarted broker (pid $new) is not running"
kafka_works || fail "the restarted broker does not lead its partitions or take a record"
pass "broker back after kill -9 in ${took}s on the first call (pid $old -> $new)"

"$DEV_DIR/up.sh" kafka
[ "$(pid_of "$KAFKA_STATE")" = "$new" ] || fail "a second dev/up.sh replaced the running broker"
pass "dev/up.sh again leaves the running broker alone"

ch=$(pid_of "$CLICKHOUSE_STATE")
"$DEV_DIR/down.sh" clickhouse
! clickhouse_works || fail "ClickHouse still answers after dev/down.sh clickhouse"
[ "$(pid_of "$KAFKA_STATE")" = "$new" ] && pid_alive "$KAFKA_STATE/pid" || fail "dev/down.sh clickhouse stopped Kafka"
"$DEV_DIR/up.sh" clickhouse
clickhouse_works || fail "ClickHouse does not answer after dev/up.sh clickhouse"
[ "$(pid_of "$CLICKHOUSE_STATE")" != "$ch" ] || fail "dev/up.sh clickhouse did not start a new ClickHouse"
[ "$(pid_of "$KAFKA_STATE")" = "$new" ] || fail "dev/up.sh clickhouse restarted Kafka"
kafka_works || fail "Kafka is not usable after ClickHouse was stopped and started"
pass "ClickHouse stopped and started alone; Kafka untouched"
