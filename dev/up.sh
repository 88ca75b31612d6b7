#!/usr/bin/env bash
# Starts the dev stack on 127.0.0.1 — a single-node Apache Kafka in KRaft
# combined mode and a ClickHouse server — installing what is missing, and
# creates Sluice's topics. Idempotent: parts already running are left alone.
# Data is kept in $SLUICE_DEV_STATE across restarts; `make dev-clean` wipes it.
#
#   dev/up.sh [kafka] [clickhouse]
#
# starts only the parts named (both by default); topics are created when
# Kafka is among them.
#
# A part that was killed (kill -9) is started again: up.sh waits until the
# dead process's ports are closed, and a start that exits during start-up is
# retried, up to SLUICE_DEV_START_TRIES starts, each failed start's log kept
# beside the live one.
#
# SLUICE_DEV_OWNER names who started the stack (written only when this run
# started something); dev/down.sh --if-owner OWNER stops only such a stack.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

select_parts "$@"

"$DEV_DIR/install.sh"
mkdir -p "$KAFKA_STATE" "$CLICKHOUSE_STATE"
# The CA, certificates and passwords of the secured listeners (once per state).
"$DEV_DIR/certs.sh"

started=0

start_kafka() {
  if pid_alive "$KAFKA_STATE/pid"; then return; fi
  # A broker killed a moment ago may still hold its ports and the lock on
  # its data directory; a new one started meanwhile exits at once.
  wait_gone Kafka "$KAFKA_STATE/pid" "$SLUICE_DEV_KAFKA_PORT" "$SLUICE_DEV_KAFKA_CONTROLLER_PORT" \
    "$SLUICE_DEV_KAFKA_SASL_PORT" "$SLUICE_DEV_KAFKA_SSL_PORT"
  local jars; jars=$(kafka_jars_dir)
  local plain_password; plain_password=$(cat "$TLS_STATE/plain.password")
  cat > "$KAFKA_STATE/server.properties" <<PROPS
# Written by dev/up.sh: one node that is both controller and broker (KRaft).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$SLUICE_DEV_KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
# Four doors to the one broker: PLAINTEXT (what the services use by default;
# also the inter-broker listener), SASL_SSL and SSL with a required client
# certificate (for the tests of secured connections), and the controller's.
# A client is given the addresses of the listener it came in through.
listeners=PLAINTEXT://127.0.0.1:$SLUICE_DEV_KAFKA_PORT,CONTROLLER://127.0.0.1:$SLUICE_DEV_KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SLUICE_DEV_KAFKA_SASL_PORT,SSL://127.0.0.1:$SLUICE_DEV_KAFKA_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$SLUICE_DEV_KAFKA_PORT,SASL_SSL://127.0.0.1:$SLUICE_DEV_KAFKA_SASL_PORT,SSL://127.0.0.1:$SLUICE_DEV_KAFKA_SSL_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
inter.broker.listener.name=PLAINTEXT
# TLS of both secured listeners: the dev CA's server certificate, read as PEM
# (Kafka 4 takes PEM key stores as they are); clients of the SSL listener
# must show a certificate the dev CA signed.
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_STATE/server-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_STATE/ca.pem
listener.name.ssl.ssl.client.auth=required
# SASL on the SASL_SSL listener. SCRAM users live in the cluster metadata
# (added at format time; pkg/testenv adds them to a state formatted before
# they existed); the PLAIN user is here. OAUTHBEARER uses Kafka's unsecured
# JWS validator: it accepts any unsigned token with a subject and a future
# expiry, which is fine for a throwaway dev broker and never for production.
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SLUICE_DEV_PLAIN_USER="$plain_password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
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
# 30 s is 15 heartbeats of 2 s. It is not longer because the session is also
# what a broker killed with kill -9 leaves behind: the controller keeps the
# dead incarnation's registration until its session expires, counted from
# when the restarted controller takes over, and refuses the new incarnation
# (DUPLICATE_BROKER_REGISTRATION) until then. At 60 s a restart took over a
# minute, and the new broker gave up registering (then after the default
# 60 s) and exited.
broker.session.timeout.ms=30000
broker.heartbeat.interval.ms=2000
# How long a starting broker keeps trying to register before it exits. It
# must outlast the session above (a restart after kill -9 waits all of it)
# plus the controller's own start on a loaded machine: 75 s is 2.5 sessions,
# and below SLUICE_DEV_START_TIMEOUT (90 s), so a broker that cannot
# register exits, and up.sh retries it, before up.sh would give up waiting.
initial.broker.registration.timeout.ms=75000
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
    local scram_password; scram_password=$(cat "$TLS_STATE/scram.password")
    java -cp "$jars/*" kafka.tools.StorageTool format --ignore-formatted \
        -t "$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid)" \
        --add-scram "SCRAM-SHA-256=[name=$SLUICE_DEV_SCRAM_USER,password=$scram_password]" \
        --add-scram "SCRAM-SHA-512=[name=$SLUICE_DEV_SCRAM_USER,password=$scram_password]" \
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
  wait_gone ClickHouse "$CLICKHOUSE_STATE/pid" "$SLUICE_DEV_CLICKHOUSE_PORT" "$SLUICE_DEV_CLICKHOUSE_HTTP_PORT" \
    "$SLUICE_DEV_CLICKHOUSE_SECURE_PORT"
  local d=$CLICKHOUSE_STATE
  local tls_password; tls_password=$(cat "$TLS_STATE/clickhouse.password")
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
  <!-- The native protocol over TLS, with the dev CA's server certificate. -->
  <tcp_port_secure>$SLUICE_DEV_CLICKHOUSE_SECURE_PORT</tcp_port_secure>
  <openSSL>
    <server>
      <certificateFile>$TLS_STATE/server.pem</certificateFile>
      <privateKeyFile>$TLS_STATE/server.key</privateKeyFile>
      <verificationMode>none</verificationMode>
      <loadDefaultCAFile>false</loadDefaultCAFile>
      <cacheSessions>true</cacheSessions>
      <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
      <preferServerCiphers>true</preferServerCiphers>
    </server>
  </openSSL>
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
  # default: no password, for the plain port; $SLUICE_DEV_CLICKHOUSE_TLS_USER:
  # a password from dev/certs.sh, for the tests over the secure port.
  cat > "$d/users.xml" <<XML
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
    <$SLUICE_DEV_CLICKHOUSE_TLS_USER>
      <password>$tls_password</password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </$SLUICE_DEV_CLICKHOUSE_TLS_USER>
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
# process exits (returns 1), or the timeout passes (dies); on failure names
# the log to read.
wait_ready() {
  local name=$1 pidfile=$2 logfile=$3; shift 3
  local deadline=$((SECONDS + SLUICE_DEV_START_TIMEOUT))
  until "$@"; do
    if ! pid_alive "$pidfile"; then
      tail -n 20 "$logfile" >&2 || true
      log "$name exited during start-up; read $logfile"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 20 "$logfile" >&2 || true
      die "$name not ready after ${SLUICE_DEV_START_TIMEOUT}s; read $logfile"
    fi
    sleep 0.3
  done
}

# run_part NAME START LOG READY: starts a part (START does nothing if it is
# already running) and waits until READY passes. A start that exits during
# start-up is retried up to SLUICE_DEV_START_TRIES starts in all; the log of
# each failed start is kept as LOG.failed-N and named.
run_part() {
  local name=$1 start=$2 logfile=$3 ready=$4 pidfile try failed=()
  pidfile=$(dirname "$logfile")/pid
  for ((try = 1; ; try++)); do
    "$start"
    if wait_ready "$name" "$pidfile" "$logfile" "$ready"; then return 0; fi
    cp "$logfile" "$logfile.failed-$try" 2>/dev/null || true
    failed+=("$logfile.failed-$try")
    if [ "$try" -ge "$SLUICE_DEV_START_TRIES" ]; then
      die "$name exited during start-up $try times; read ${failed[*]}"
    fi
    log "starting $name again (start $((try + 1)) of $SLUICE_DEV_START_TRIES)"
  done
}

kafka_ready() { port_open "$SLUICE_DEV_KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_STATE/kafka.log"; }
clickhouse_ready() { curl -fsS "http://127.0.0.1:$SLUICE_DEV_CLICKHOUSE_HTTP_PORT/ping" >/dev/null 2>&1; }

# Both start before either is waited for: they come up side by side.
if wants kafka; then start_kafka; fi
if wants clickhouse; then start_clickhouse; fi
if wants kafka; then run_part Kafka start_kafka "$KAFKA_STATE/kafka.log" kafka_ready; fi
if wants clickhouse; then
  run_part ClickHouse start_clickhouse "$CLICKHOUSE_STATE/clickhouse-server.err.log" clickhouse_ready
fi

if [ "$started" = 1 ]; then echo "${SLUICE_DEV_OWNER:-user}" > "$SLUICE_DEV_STATE/owner"; fi

if wants kafka && [ "${SLUICE_DEV_TOPICS:-1}" = 1 ]; then
  (cd "$REPO_DIR" && go run ./pkg/cmd/sluice-topics \
      -kafka-brokers "127.0.0.1:$SLUICE_DEV_KAFKA_PORT" \
      -replication-factor 1 -min-insync-replicas 1 \
      -partitions-deliveries "${SLUICE_DEV_DELIVERY_PARTITIONS:-24}") \
    || die "creating topics failed"
fi

log "ready: ${parts[*]} (Kafka 127.0.0.1:$SLUICE_DEV_KAFKA_PORT, SASL_SSL $SLUICE_DEV_KAFKA_SASL_PORT, SSL $SLUICE_DEV_KAFKA_SSL_PORT; ClickHouse 127.0.0.1:$SLUICE_DEV_CLICKHOUSE_PORT, TLS $SLUICE_DEV_CLICKHOUSE_SECURE_PORT, http $SLUICE_DEV_CLICKHOUSE_HTTP_PORT)"
