#!/usr/bin/env bash
# The whole test suite, as README.md gives it and CI runs it (.ci/run).
# Installs what the tests need when it is missing (as root, from Debian), builds,
# runs the unit, integration and rule tests, and validates the shipped rules.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "== $*" >&2; }

# need COMMAND DEBIAN-PACKAGE: install the package when the command is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then echo "missing $1: install the Debian package $2" >&2; exit 1; fi
  log "installing $2 (for $1)"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
need cmake cmake
need c++ g++

log "build"
cargo build --locked --release --bin squadron

log "rules: check and rule tests"
./target/release/squadron check rules
./target/release/squadron test rules/tests

log "unit, integration and CLI tests"
cargo test --locked
