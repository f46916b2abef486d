#!/usr/bin/env bash
# Idle cost, side by side: CPU seconds per minute of an idle `squadron run`
# (no traffic, the example rules, a real broker) and of an idle Alertmanager
# (ALERTMANAGER_BIN, default: 0.35.0 from scripts/alertmanager.sh, which builds
# it once; Debian's prometheus-alertmanager if Go is missing), measured over the same minutes from
# /proc/<pid>/stat, with squadron's threads broken down by name.
#
#   scripts/kafka.sh start && scripts/idle-cpu.sh [SECONDS]     (default 120)
#
# SQUADRON_BASELINE_BIN=path/to/an/older/squadron also measures that binary
# in the same minutes (before/after a change), with the rules directory
# SQUADRON_BASELINE_RULES (default rules/; an older binary may need its own). Needs a release build
# (cargo build --release) and SQUADRON_KAFKA_PORT's broker (default 19092).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-120}"
port="${SQUADRON_KAFKA_PORT:-19092}"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# The input topic exists, as in production (a missing one is an error logged
# every 10 s, which is not idle).
libs="${SQUADRON_CACHE:-$HOME/.cache/squadron}/kafka-${KAFKA_VERSION:-4.1.1}/libs"
java -cp "$libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
  --create --if-not-exists --topic idle.input --partitions 4 --replication-factor 1 >/dev/null 2>&1 || true

# start_squadron NAME BINARY RULES: an idle instance in a consumer group of its own.
start_squadron() {
  cat >"$work/$1.yaml" <<EOF
kafka:
  bootstrap_servers: 127.0.0.1:$port
  input_topics: [idle.input]
  group_id: idle-$1-$$
  instance_id: idle-$1-$$
http: {listen: "127.0.0.1:0"}
EOF
  SQUADRON_LOG=warn "$2" run --config "$work/$1.yaml" --rules "$3" >"$work/$1.log" 2>&1 &
  pids+=($!)
  names+=("$1")
}
names=()
start_squadron squadron ./target/release/squadron rules
if [ -n "${SQUADRON_BASELINE_BIN:-}" ]; then
  start_squadron baseline "$SQUADRON_BASELINE_BIN" "${SQUADRON_BASELINE_RULES:-rules}"
fi

am_bin="${ALERTMANAGER_BIN:-$(scripts/alertmanager.sh path 2>/dev/null || command -v prometheus-alertmanager)}"
echo "alertmanager: $("$am_bin" --version 2>&1 | head -1)"
printf 'route: {receiver: none}\nreceivers: [{name: none}]\n' >"$work/am.yml"
"$am_bin" --config.file="$work/am.yml" --storage.path="$work/am-data" \
  --web.listen-address=127.0.0.1:0 --cluster.listen-address= >"$work/am.log" 2>&1 &
pids+=($!)
names+=(alertmanager)

# All settle first (squadron joins its group and restores; Alertmanager loads).
sleep 20
for i in "${!pids[@]}"; do
  kill -0 "${pids[i]}" 2>/dev/null || { echo "${names[i]} exited:" >&2; tail -5 "$work/${names[i]}.log" >&2; exit 1; }
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
threads() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
before=(); for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
threads "${pids[0]}" >"$work/t0"
sleep "$secs"
after=(); for p in "${pids[@]}"; do after+=("$(ticks "$p")"); done
threads "${pids[0]}" >"$work/t1"

hz=$(getconf CLK_TCK)
echo "idle CPU over $secs s, in CPU-seconds per minute ($(date -u +%FT%TZ), $(nproc) cores):"
am_rate=0
for i in "${!pids[@]}"; do
  rate=$(awk -v d=$((after[i] - before[i])) -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.3f", d / hz * 60 / s}')
  printf '  %-14s %s\n' "${names[i]}" "$rate"
  [ "${names[i]}" = alertmanager ] && am_rate=$rate
done
echo "squadron by thread (CPU-s per minute):"
join "$work/t0" "$work/t1" | awk -v hz="$hz" -v secs="$secs" '{ d = ($3 - $2) / hz * 60 / secs; if (d > 0) printf "  %-22s %.3f\n", $1, d }' | sort -k2 -rn
echo "(alertmanager: $am_rate; ratios in BENCHMARKS.md are computed from these lines)"
