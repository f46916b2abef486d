#!/usr/bin/env bash
# A current Alertmanager, built from its Go module (once, cached), for the
# side-by-side harness (scripts/compare-alertmanager.py).
#
#   scripts/alertmanager.sh build   download the module and build it, unless cached
#   scripts/alertmanager.sh path    build if needed, then print the binary's path
#
# The web UI's compiled assets are not in the Go module (ui/app/dist is made by
# npm in Alertmanager's own build). The API and everything the harness measures
# do not use them: an empty placeholder page lets the module compile.
#
# Settings (environment):
#   ALERTMANAGER_VERSION  default v0.35.0
#   SQUADRON_CACHE        where the binary is cached; default ~/.cache/squadron
# Needs: Go (1.24 or newer) and the Go module proxy.
set -euo pipefail

VERSION="${ALERTMANAGER_VERSION:-v0.35.0}"
CACHE="${SQUADRON_CACHE:-$HOME/.cache/squadron}"
DIR="$CACHE/alertmanager-$VERSION"
BIN="$DIR/alertmanager"
MODULE=github.com/prometheus/alertmanager

log() { echo "alertmanager.sh: $*" >&2; }

build() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || { log "go not found: install Go"; exit 1; }
  log "building Alertmanager $VERSION from its Go module into $DIR (once)"
  local src
  # -modcacherw: the module cache stays deletable; the copy below is writable.
  src="$(GOFLAGS=-modcacherw go mod download -json "$MODULE@$VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src" ] || { log "go mod download did not give a source directory for $MODULE@$VERSION"; exit 1; }
  local work; work="$(mktemp -d)"
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  mkdir -p "$work/ui/app/dist"
  printf '<!doctype html><title>Alertmanager</title><p>UI not built (squadron benchmark build).\n' >"$work/ui/app/dist/index.html"
  mkdir -p "$DIR"
  (cd "$work" && GOFLAGS=-modcacherw CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" \
      -ldflags "-X github.com/prometheus/common/version.Version=${VERSION#v}" ./cmd/alertmanager) || {
    log "go build failed (kept $work for a look)"; exit 1; }
  rm -rf "$work"
  mv "$BIN.tmp" "$BIN"
  log "built $("$BIN" --version 2>&1 | head -1)"
}

case "${1:-}" in
  build) build ;;
  path) build; echo "$BIN" ;;
  *) echo "usage: $0 build|path" >&2; exit 2 ;;
esac
