#!/usr/bin/env bash
# What the tests need beyond the venv: PostgreSQL (the local cluster, started if it is down;
# when none answers, the test run starts an embedded one itself, see cxkit.testing) and
# Debian's headless Chromium with its driver (for the respondent-page browser test), and kcat
# (the outside-system test publishes with it, on the confluent-kafka wheel's librdkafka).
set -euo pipefail

# Same server the tests use (cxkit.testing reads CX_TEST_PG_DSN too).
PG_DSN="${CX_TEST_PG_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}"
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -d "$PG_DSN" -q 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "PostgreSQL is down; starting it"
  if pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start; then
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  fi
fi
pg_up || echo "no PostgreSQL answers at $PG_DSN: the tests start an embedded one"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium + chromium-driver for the browser test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium/chromedriver missing and cannot be installed here; the browser test will be skipped" >&2
  fi
fi

# axe-core (the accessibility check the dashboard browser tests inject), pinned by
# tests/browser/package-lock.json; installed once into tests/browser/node_modules.
BROWSER_DEPS="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if [ -f "$BROWSER_DEPS/package-lock.json" ] && [ ! -f "$BROWSER_DEPS/node_modules/axe-core/axe.min.js" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing axe-core for the dashboard accessibility check"
    npm ci --prefix "$BROWSER_DEPS" --no-audit --no-fund --loglevel=error
  else
    echo "npm missing: the dashboard accessibility check will be skipped" >&2
  fi
fi

if ! command -v kcat >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian kcat for the outside-system test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
  else
    echo "kcat missing and cannot be installed here; the outside-system test publishes with confluent-kafka only" >&2
  fi
fi
