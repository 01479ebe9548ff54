#!/usr/bin/env bash
# The WAL-reading side of issue #20's comparison, not a test: Kafka Connect (standalone, the
# broker's Kafka version) with the Debezium PostgreSQL connector (pgoutput) and its outbox
# router, on the PostgreSQL and Kafka of `make env-up`, drains the burst bench-relay writes
# (100,000 rows of 256 bytes over 1,000 keys in 1,000-row transactions). Prints the writer's time,
# the seconds from the first insert until the topic holds every row, and Connect's peak RSS.
# Needs `wal_level = logical`: it sets it and restarts this environment's PostgreSQL once.
# Jars are resolved from Maven Central into $FERRY_CACHE/debezium/<version>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../.ferry/env"
: "${FERRY_CACHE:=$HOME/.cache/ferry}"
version=$(sed -n 's|.*<debezium.version>\(.*\)</debezium.version>.*|\1|p' "$here/pom.xml")
libs=$FERRY_CACHE/debezium/$version/libs
if [ ! -d "$libs" ]; then
  mvn -q -B -s "$here/settings.xml" -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs.partial"
  mv "$libs.partial" "$libs"
fi
psql() { command psql "$FERRY_DATABASE_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql -c 'SHOW wal_level')" != logical ]; then
  psql -c "ALTER SYSTEM SET wal_level = logical"
  "$FERRY_ENV_CTL" restart postgres
fi
run=$(date +%s%N | tail -c 9)
schema=debezium_$run topic=debezium-bench-$run work=$(mktemp -d)
trap 'kill ${connect_pid:-} ${watch_pid:-} 2>/dev/null || true; wait 2>/dev/null || true
      psql -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"'"'bench_$run'"'"'" >/dev/null 2>&1 || true
      psql -c "DROP SCHEMA IF EXISTS $schema CASCADE; DROP PUBLICATION IF EXISTS bench_$run" >/dev/null 2>&1 || true
      rm -rf "$work"' EXIT
psql -c "CREATE SCHEMA $schema; SET search_path = $schema;
  CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text, key jsonb, payload jsonb, headers jsonb,
    created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz, publish_error text);
  CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
  CREATE PUBLICATION bench_$run FOR TABLE outbox;"
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$FERRY_KAFKA_USERNAME\" password=\"$FERRY_KAFKA_PASSWORD\";"
sasl() { printf '%ssecurity.protocol=SASL_PLAINTEXT\n%ssasl.mechanism=SCRAM-SHA-512\n%ssasl.jaas.config=%s\n' "$1" "$1" "$1" "$jaas"; }
{
  echo "bootstrap.servers=$FERRY_KAFKA_BOOTSTRAP"
  sasl ""; sasl "producer."; sasl "admin."
  echo "key.converter=org.apache.kafka.connect.storage.StringConverter"
  echo "value.converter=org.apache.kafka.connect.storage.StringConverter"
  echo "offset.storage.file.filename=$work/offsets"
  echo "offset.flush.interval.ms=1000"
  echo "listeners=http://127.0.0.1:0"
  # As the relay's producer: idempotent, acks=all, linger 1 ms.
  echo "producer.enable.idempotence=true"; echo "producer.acks=all"; echo "producer.linger.ms=1"
} > "$work/worker.properties"
pg_port=$(echo "$FERRY_DATABASE_URL" | sed -n 's|.*:\([0-9]*\)/.*|\1|p')
cat > "$work/connector.properties" <<PROPS
name=bench-$run
connector.class=io.debezium.connector.postgresql.PostgresConnector
plugin.name=pgoutput
database.hostname=127.0.0.1
database.port=$pg_port
database.user=postgres
database.password=$(echo "$FERRY_DATABASE_URL" | sed -n 's|^[a-z]*://[^:/@]*:\([^@]*\)@.*|\1|p')
database.dbname=postgres
topic.prefix=bench$run
table.include.list=$schema.outbox
publication.name=bench_$run
publication.autocreate.mode=disabled
slot.name=bench_$run
snapshot.mode=no_data
topic.creation.default.replication.factor=1
topic.creation.default.partitions=3
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=id
transforms.outbox.table.field.event.key=key
transforms.outbox.table.field.event.payload=payload
transforms.outbox.route.by.field=topic
transforms.outbox.route.topic.replacement=\${routedByValue}
PROPS
java -Xmx768m -cp "$libs/*" -Dlog4j2.level=warn org.apache.kafka.connect.cli.ConnectStandalone \
  "$work/worker.properties" "$work/connector.properties" > "$work/connect.log" 2>&1 &
connect_pid=$!
for _ in $(seq 300); do
  [ "$(psql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_$run' AND active")" = 1 ] && break
  kill -0 "$connect_pid" 2>/dev/null || { tail -n 40 "$work/connect.log"; exit 1; }
  sleep 0.2
done
sleep 2
pad=$(( 256 - $(psql -c "SELECT length(jsonb_build_object('schema','test.v1','event','test.happened','id','k1:1','ts',1,'key','k1','data',jsonb_build_object('key','k1','seq',1,'pad',''))::text)") ))
# One session, one autocommit INSERT (one transaction) of 1,000 rows per line, as bench-relay.
for tx in $(seq 0 99); do
  echo "INSERT INTO $schema.outbox (topic, key, payload, headers)
    SELECT '$topic', to_jsonb(k), jsonb_build_object('schema','test.v1','event','test.happened','id',k||':'||s,'ts',1,'key',k,
      'data', jsonb_build_object('key',k,'seq',s,'pad',repeat('x',$pad))), '{}'::jsonb
    FROM (SELECT i, 'k'||(i % 1000) AS k, i / 1000 AS s FROM generate_series($tx*1000, $tx*1000+999) i) r ORDER BY i;"
done > "$work/burst.sql"
start=$(date +%s%3N)
java -cp "$libs/*" "$here/EndOffsets.java" "$topic" 100000 "$start" > "$work/drained" &
watch_pid=$!
psql -f "$work/burst.sql"
writer=$(( $(date +%s%3N) - start ))
wait "$watch_pid" || { tail -n 40 "$work/connect.log"; exit 1; }
rss=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$connect_pid/status")
printf 'debezium  %s (pgoutput, outbox router), 100000 rows written while it runs: writer %.2f s, drained %s s, Connect peak RSS %s\n' \
  "$version" "$(awk "BEGIN {print $writer/1000}")" "$(cat "$work/drained")" "$rss"
