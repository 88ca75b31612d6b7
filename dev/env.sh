#!/usr/bin/env bash
# Prints the dev stack's resolved settings as KEY=VALUE lines, so programs
# (pkg/testenv, the Makefile) take ports and paths from one place: lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cat <<VARS
SLUICE_CACHE=$SLUICE_CACHE
SLUICE_DEV_STATE=$SLUICE_DEV_STATE
KAFKA_BROKERS=127.0.0.1:$SLUICE_DEV_KAFKA_PORT
CLICKHOUSE_ADDR=127.0.0.1:$SLUICE_DEV_CLICKHOUSE_PORT
CLICKHOUSE_HTTP=http://127.0.0.1:$SLUICE_DEV_CLICKHOUSE_HTTP_PORT
VARS
