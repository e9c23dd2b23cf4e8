#!/usr/bin/env bash
# Installs the system programs the local stack needs (Java 17+, Maven, redis-server), the PostgreSQL
# server the DuckLake PostgreSQL-catalog test starts (tests/postgres.py), and the browser and npm the browser-SDK
# test uses (tests/integration/test_browser_sdks.py: Playwright drives Debian's chromium; npm fetches the SDKs)
# when missing.
# Debian/Ubuntu only; needs root or sudo. Does nothing when everything is already there.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian keeps initdb, pg_ctl and postgres in /usr/lib/postgresql/<version>/bin, off PATH.
has_postgres() {
  local dir
  for dir in /usr/local/bin /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] && return 0
  done
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}
has_postgres || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "missing: ${missing[*]}" >&2
  echo "fix: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; this script only knows apt-get: install them with your package manager" >&2
  exit 1
fi

echo "installing ${missing[*]} with apt-get" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
