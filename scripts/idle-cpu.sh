#!/usr/bin/env bash
# Idle cost, side by side: CPU seconds per minute of an idle `squadron run`
# (no traffic, the example rules, a real broker) and of an idle Alertmanager
# (Debian's prometheus-alertmanager), measured over the same minutes from
# /proc/<pid>/stat, with squadron's threads broken down by name.
#
#   scripts/kafka.sh start && scripts/idle-cpu.sh [SECONDS]     (default 120)
#
# Needs a release build (cargo build --release) and SQUADRON_KAFKA_PORT's
# broker (default 19092).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-120}"
port="${SQUADRON_KAFKA_PORT:-19092}"
work="$(mktemp -d)"
trap 'kill $sq $am 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/squadron.yaml" <<EOF
kafka:
  bootstrap_servers: 127.0.0.1:$port
  input_topics: [idle.input]
  group_id: idle-$$
http: {listen: "127.0.0.1:0"}
EOF
SQUADRON_LOG=warn ./target/release/squadron run --config "$work/squadron.yaml" --rules rules \
  >"$work/squadron.log" 2>&1 &
sq=$!

am_bin="$(command -v alertmanager || command -v prometheus-alertmanager)"
printf 'route: {receiver: none}\nreceivers: [{name: none}]\n' >"$work/am.yml"
"$am_bin" --config.file="$work/am.yml" --storage.path="$work/am-data" \
  --web.listen-address=127.0.0.1:0 --cluster.listen-address= >"$work/am.log" 2>&1 &
am=$!

# Both settle first (squadron joins its group and restores; Alertmanager loads).
sleep 20
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
threads() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
s0=$(ticks $sq); a0=$(ticks $am); threads $sq >"$work/t0"
sleep "$secs"
s1=$(ticks $sq); a1=$(ticks $am); threads $sq >"$work/t1"

hz=$(getconf CLK_TCK)
awk -v s=$((s1 - s0)) -v a=$((a1 - a0)) -v hz="$hz" -v secs="$secs" 'BEGIN {
  sq = s / hz * 60 / secs; am = a / hz * 60 / secs
  printf "idle CPU over %d s, in CPU-seconds per minute:\n", secs
  printf "  squadron      %.3f\n", sq
  printf "  alertmanager  %.3f\n", am
  if (am > 0) printf "  ratio         %.1fx\n", sq / am
}'
echo "squadron by thread (CPU-s per minute):"
join "$work/t0" "$work/t1" | awk -v hz="$hz" -v secs="$secs" '{ d = ($3 - $2) / hz * 60 / secs; if (d > 0) printf "  %-22s %.3f\n", $1, d }' | sort -k2 -rn
