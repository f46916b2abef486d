#!/usr/bin/env bash
# squadron replay against CPython merely parsing the same recording (issue 14's
# yardstick), and optionally against a baseline build, in alternating runs.
#
#   scripts/replay-vs-python.sh [ROUNDS]        (default 8)
#
# Environment: SQUADRON_BIN (default target/release/squadron),
# SQUADRON_BASELINE_BIN (another build, optional), RULES (default rules),
# RECORDING (default /tmp/hour.jsonl, made by `squadron generate hour` if missing).
# CPU is perf's task-clock of each whole process. Prints each run, then the
# mean per program and its ratio to CPython.
set -euo pipefail
rounds=${1:-8}
bin=${SQUADRON_BIN:-target/release/squadron}
base=${SQUADRON_BASELINE_BIN:-}
rules=${RULES:-rules}
rec=${RECORDING:-/tmp/hour.jsonl}
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)" >&2; exit 1; }
[ -s "$rec" ] || "$bin" generate hour -o "$rec"

# Each build must replay the file cleanly before it is timed (perf times a failing run too).
for b in "$bin" ${base:+"$base"}; do
  "$b" replay --rules "$rules" "$rec" >/dev/null
done
clock() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ {print $1}'; }
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq 1 "$rounds"); do
  echo "squadron $(clock "$bin" replay --rules "$rules" "$rec")" | tee -a "$runs"
  if [ -n "$base" ]; then
    echo "baseline $(clock "$base" replay --rules "$rules" "$rec")" | tee -a "$runs"
  fi
  echo "cpython $(clock python3 -c '
import json, sys
for line in open(sys.argv[1], "rb"):
    json.loads(line)
' "$rec")" | tee -a "$runs"
done
awk '{s[$1] += $2; n[$1]++} END {
  py = s["cpython"] / n["cpython"]
  for (k in s) printf "%-9s mean %7.1f ms task-clock over %d runs; CPython / it = %.2f\n", k, s[k] / n[k], n[k], py / (s[k] / n[k])
}' "$runs"
