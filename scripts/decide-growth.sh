#!/bin/bash
# How fast one `squadron run` decides while its state grows toward 1,000,000
# active alerts: `squadron loadgen --distinct 1000000 --batch 500` offers
# alerts to its HTTP ingest for SECONDS, then this waits until the pipeline has
# decided every accepted alert. Prints one line of figures and the VmRSS.
#
#   scripts/decide-growth.sh [SQUADRON_BINARY] [SECONDS]
#
# Needs a broker on 127.0.0.1:19092 (scripts/kafka.sh start; BROKERS for
# another) and a release build. Loopback only. Set PERF=1 to record a 10 s
# profile (perf) into /tmp/perf.data while it runs.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/squadron}
SECS=${2:-15}
BROKERS=${BROKERS:-127.0.0.1:19092}
ID=decide-growth-$(date +%s)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
SQUADRON_LOG=warn "$BIN" run --rules "$ROOT/rules" --bootstrap-servers "$BROKERS" --group-id "$ID" \
  --input-topics "$ID" --dead-letter-topic "$ID-dlq" --http-listen "127.0.0.1:$PORT" \
  --kafka-property topic.metadata.refresh.interval.ms=1000 2>"/tmp/$ID.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until curl -sf "127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.5; done
sleep 3
metric() { curl -s "127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {printf "%d", s}'; }
cpu() { awk '{print $14+$15}' "/proc/$PID/stat"; }
cpu0=$(cpu)
t0=$(date +%s.%N)
if [ -n "${PERF:-}" ]; then
  (sleep 8; perf record -g -F 97 -p $PID -o /tmp/perf.data -- sleep 10 >/dev/null 2>&1) &
fi
accepted=$("$ROOT/target/release/squadron" loadgen --url "http://127.0.0.1:$PORT/api/v2/alerts" \
  --distinct 1000000 --batch 500 --duration "${SECS}s" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted_alerts"])')
deadline=$(( $(date +%s) + 900 ))
while [ "$(metric squadron_alerts_received_total)" -lt "$accepted" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  sleep 0.5
done
t1=$(date +%s.%N)
cpu1=$(cpu)
decided=$(metric squadron_alerts_received_total)
active=$(metric 'squadron_active_alerts$')
python3 -c "print('accepted=$accepted decided=$decided active=$active seconds=%.1f decided_per_s=%.0f cpu_s=%.1f' % ($t1-$t0, $decided/($t1-$t0), ($cpu1-$cpu0)/100))"
grep VmRSS "/proc/$PID/status"
