#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft) on loopback, for tests and benchmarks.
#
#   scripts/kafka.sh fetch    download the broker's jars from Maven Central (once, cached)
#   scripts/kafka.sh start    fetch if needed, format storage, start, wait until ready
#   scripts/kafka.sh stop     stop the broker started by `start`
#   scripts/kafka.sh resume   start it again on its existing storage (after `stop`: an outage)
#   scripts/kafka.sh status   say whether it runs
#
# Settings (environment):
#   KAFKA_VERSION         default 4.1.1
#   SQUADRON_CACHE        where jars are cached; default ~/.cache/squadron
#   SQUADRON_KAFKA_PORT   broker port on 127.0.0.1; default 19092 (controller: port+1)
#   SQUADRON_KAFKA_DIR    data, config, log and pid; default /tmp/squadron-kafka-$PORT
#
# Besides PLAINTEXT on $PORT, the broker serves SASL_SSL on port+2: TLS with a
# certificate for 127.0.0.1 signed by a CA made at start ($DIR/tls/ca.pem), and
# SCRAM-SHA-256 with the user `squadron`, password `squadron-test-password`.
# Needs: a JDK 17+ (java), Maven (mvn) and openssl. Listens on 127.0.0.1 only.
set -euo pipefail

VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${SQUADRON_CACHE:-$HOME/.cache/squadron}"
LIBS="$CACHE/kafka-$VERSION/libs"
PORT="${SQUADRON_KAFKA_PORT:-19092}"
CONTROLLER_PORT=$((PORT + 1))
SASL_PORT=$((PORT + 2))
SCRAM_USER=squadron
SCRAM_PASSWORD=squadron-test-password
DIR="${SQUADRON_KAFKA_DIR:-/tmp/squadron-kafka-$PORT}"
PIDFILE="$DIR/kafka.pid"

log() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (Debian package maven)"; exit 1; }
  log "fetching Apache Kafka $VERSION jars from Maven Central into $LIBS (once)"
  local work; work="$(mktemp -d)"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>squadron</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS" && mkdir -p "$LIBS"
  (cd "$work" && mvn -q -B -ntp dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS") || {
    log "maven could not fetch the broker's jars"; rm -rf "$work"; exit 1; }
  rm -rf "$work"
  touch "$LIBS/.complete"
  log "fetched $(ls "$LIBS" | wc -l) jars"
}

# A CA and a broker certificate for 127.0.0.1 (PEM, unencrypted PKCS#8 key).
make_tls() {
  command -v openssl >/dev/null || { log "openssl not found: install it (Debian package openssl)"; exit 1; }
  local t="$DIR/tls"
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=squadron test CA" \
    -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$t/broker.key" -out "$t/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/san.ext"
  openssl x509 -req -in "$t/broker.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 30 -extfile "$t/san.ext" -out "$t/broker.pem" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$t/broker.key" -out "$t/broker.pk8" 2>/dev/null
  cat "$t/broker.pk8" "$t/broker.pem" >"$t/keystore.pem"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  if port_open "$PORT"; then log "port $PORT is taken by another process; set SQUADRON_KAFKA_PORT"; exit 1; fi
  fetch
  command -v java >/dev/null || { log "java not found: install a JDK 17+"; exit 1; }
  rm -rf "$DIR" && mkdir -p "$DIR/data"
  make_tls
  cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SASL_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$DIR/tls/keystore.pem
log.dirs=$DIR/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=2
log.segment.bytes=67108864
EOF
  cat >"$DIR/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$DIR/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
EOF
  local cp="$LIBS/*"
  local cluster_id
  cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  java -cp "$cp" -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]" >"$DIR/format.log" 2>&1 || {
    log "formatting storage failed:"; cat "$DIR/format.log" >&2; exit 1; }
  launch
}

# Starts the JVM on the storage in $DIR and waits until it serves.
launch() {
  local cp="$LIBS/*"
  : >"$DIR/server.log"
  : >"$DIR/stdout.log"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -cp "$cp" \
    -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    kafka.Kafka "$DIR/server.properties" >"$DIR/stdout.log" 2>&1 &
  echo $! >"$PIDFILE"
  # Ready when the broker says it started and its port accepts connections.
  for _ in $(seq 1 120); do
    if ! running; then log "broker exited during startup:"; tail -n 40 "$DIR/stdout.log" "$DIR/server.log" >&2 || true; exit 1; fi
    if port_open "$PORT" && grep -q "Kafka Server started" "$DIR/server.log" "$DIR/stdout.log" 2>/dev/null; then
      log "Apache Kafka $VERSION ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), logs in $DIR)"
      return 0
    fi
    sleep 0.5
  done
  log "broker not ready after 60s:"; tail -n 40 "$DIR/server.log" >&2 || true; stop; exit 1
}

resume() {
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  [ -f "$DIR/server.properties" ] || { log "nothing to resume in $DIR: use start"; exit 1; }
  launch
}

stop() {
  if ! running; then log "not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  resume) resume ;;
  status) if running; then echo "running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 fetch|start|stop|resume|status" >&2; exit 2 ;;
esac
