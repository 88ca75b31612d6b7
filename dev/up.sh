#!/usr/bin/env bash
# Starts the dev stack on 127.0.0.1 — a single-node Apache Kafka in KRaft
# combined mode and a ClickHouse server — installing what is missing, and
# creates Sluice's topics. Idempotent: parts already running are left alone.
# Data is kept in $SLUICE_DEV_STATE across restarts; `make dev-clean` wipes it.
#
# SLUICE_DEV_OWNER names who started the stack (written only when this run
# started something); dev/down.sh --if-owner OWNER stops only such a stack.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$DEV_DIR/install.sh"
mkdir -p "$KAFKA_STATE" "$CLICKHOUSE_STATE"

started=0

start_kafka() {
  if pid_alive "$KAFKA_STATE/pid"; then return; fi
  if port_open "$SLUICE_DEV_KAFKA_PORT"; then
    die "port $SLUICE_DEV_KAFKA_PORT is taken by another process; set SLUICE_DEV_KAFKA_PORT"
  fi
  local jars; jars=$(kafka_jars_dir)
  cat > "$KAFKA_STATE/server.properties" <<PROPS
# Written by dev/up.sh: one node that is both controller and broker (KRaft).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$SLUICE_DEV_KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$SLUICE_DEV_KAFKA_PORT,CONTROLLER://127.0.0.1:$SLUICE_DEV_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$SLUICE_DEV_KAFKA_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_STATE/data
# A misspelt topic must fail loudly, not appear silently.
auto.create.topics.enable=false
num.partitions=1
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than production's 50: the first group or
# transaction creates them, and 50 cost seconds on two cores.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
# Tests join and leave groups constantly; the default 3 s delay would be paid
# by every one of them.
group.initial.rebalance.delay.ms=0
# On a busy two-core machine (builds, linkers, fuzzers) the controller's
# fsyncs can stall for seconds, and with the 9 s default the single broker
# gets fenced by its own controller and drops every partition leadership.
# A node that is both cannot really be "stale": give it a minute.
broker.session.timeout.ms=60000
broker.heartbeat.interval.ms=2000
# The controller writes a no-op record every 500 ms by default to prove
# liveness to other voters; there are none, so every 5 s is plenty.
metadata.max.idle.interval.ms=5000
PROPS
  cat > "$KAFKA_STATE/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
YAML
  if [ ! -f "$KAFKA_STATE/data/meta.properties" ]; then
    log "formatting Kafka storage in $KAFKA_STATE/data"
    java -cp "$jars/*" kafka.tools.StorageTool format --ignore-formatted \
        -t "$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid)" \
        -c "$KAFKA_STATE/server.properties" >"$KAFKA_STATE/format.log" 2>&1 \
      || { cat "$KAFKA_STATE/format.log" >&2; die "formatting Kafka storage failed (see $KAFKA_STATE/format.log)"; }
  fi
  log "starting Kafka on 127.0.0.1:$SLUICE_DEV_KAFKA_PORT (log: $KAFKA_STATE/kafka.log)"
  # 1 GiB heap is plenty for one node under test load; the page cache does
  # the real work.
  setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.yaml" \
      -cp "$jars/*" kafka.Kafka "$KAFKA_STATE/server.properties" \
      >"$KAFKA_STATE/kafka.log" 2>&1 < /dev/null &
  echo $! > "$KAFKA_STATE/pid"
  started=1
}

start_clickhouse() {
  if pid_alive "$CLICKHOUSE_STATE/pid"; then return; fi
  if port_open "$SLUICE_DEV_CLICKHOUSE_PORT"; then
    die "port $SLUICE_DEV_CLICKHOUSE_PORT is taken by another process; set SLUICE_DEV_CLICKHOUSE_PORT"
  fi
  local d=$CLICKHOUSE_STATE
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas"
  # <yandex> is the root element 18.16 knows; current servers still accept it.
  cat > "$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>$d/clickhouse-server.log</log>
    <errorlog>$d/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$SLUICE_DEV_CLICKHOUSE_PORT</tcp_port>
  <http_port>$SLUICE_DEV_CLICKHOUSE_HTTP_PORT</http_port>
  <max_connections>1024</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <!-- Small caches: a dev machine also runs Kafka and the services. -->
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mark_cache_size>268435456</mark_cache_size>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
  cat > "$d/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  log "starting ClickHouse on 127.0.0.1:$SLUICE_DEV_CLICKHOUSE_PORT (log: $d/clickhouse-server.err.log)"
  setsid nohup clickhouse-server --config-file="$d/config.xml" \
      >"$d/stdout.log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
  started=1
}

# wait_ready NAME PIDFILE LOGFILE CHECK…: polls CHECK until it passes, the
# process dies, or the timeout passes; on failure names the log to read.
wait_ready() {
  local name=$1 pidfile=$2 logfile=$3; shift 3
  local deadline=$((SECONDS + SLUICE_DEV_START_TIMEOUT))
  until "$@"; do
    if ! pid_alive "$pidfile"; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited during start-up; read $logfile"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 20 "$logfile" >&2 || true
      die "$name not ready after ${SLUICE_DEV_START_TIMEOUT}s; read $logfile"
    fi
    sleep 0.3
  done
}

kafka_ready() { port_open "$SLUICE_DEV_KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_STATE/kafka.log"; }
clickhouse_ready() { curl -fsS "http://127.0.0.1:$SLUICE_DEV_CLICKHOUSE_HTTP_PORT/ping" >/dev/null 2>&1; }

start_kafka
start_clickhouse
wait_ready Kafka "$KAFKA_STATE/pid" "$KAFKA_STATE/kafka.log" kafka_ready
wait_ready ClickHouse "$CLICKHOUSE_STATE/pid" "$CLICKHOUSE_STATE/clickhouse-server.err.log" clickhouse_ready

if [ "$started" = 1 ]; then echo "${SLUICE_DEV_OWNER:-user}" > "$SLUICE_DEV_STATE/owner"; fi

if [ "${SLUICE_DEV_TOPICS:-1}" = 1 ]; then
  (cd "$REPO_DIR" && go run ./pkg/cmd/sluice-topics \
      -kafka-brokers "127.0.0.1:$SLUICE_DEV_KAFKA_PORT" \
      -partitions-deliveries "${SLUICE_DEV_DELIVERY_PARTITIONS:-24}") \
    || die "creating topics failed"
fi

log "ready: Kafka 127.0.0.1:$SLUICE_DEV_KAFKA_PORT, ClickHouse 127.0.0.1:$SLUICE_DEV_CLICKHOUSE_PORT (http $SLUICE_DEV_CLICKHOUSE_HTTP_PORT)"
