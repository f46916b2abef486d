#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through libfuzzer-sys, on stable Rust: the
# same instrumentation flags cargo-fuzz passes, without a sanitizer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 60 s for each target. Targets (fuzz/fuzz_targets/): decode (any
# input message: the Prometheus-batch shortcut agrees with the general
# decoder; through the engine, one fate per input), replay_line (replay
# files), matcher, time (RFC 3339 and durations), rules (rule files),
# rule_test (rule test files). Seeds are in fuzz/corpus/<target>; what the
# fuzzer learns goes to target/fuzz/corpus/<target>, crashes to
# target/fuzz/artifacts/<target>/ (then the script fails). A crash becomes a
# regression test in the crate's own tests. Long runs: scripts/fuzz.sh 3600 decode
# FUZZ_SEED=N fixes libFuzzer's random seed (scripts/test.sh uses 1); unset, each
# run explores differently.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode replay_line matcher time rules rule_test)

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
dir="$PWD/target/fuzz"
host="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps the flags off build scripts and proc macros.
cargo build --locked --manifest-path fuzz/Cargo.toml --release --target "$host" --target-dir "$dir" --bins

for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
  echo "== fuzz $t for ${secs}s" >&2
  "$dir/$host/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
    -artifact_prefix="$dir/artifacts/$t/" -print_final_stats=1 \
    "$dir/corpus/$t" "fuzz/corpus/$t"
done
