#!/usr/bin/env bash
# Runs the collector in the background for `make demo` (start) and stops it for `make down` (stop).
# Its pid is in .state/pids/collector.pid and its JSON log in .state/logs/collector.log.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${ANALYTICS_STATE_DIR:-.state}
pid_file="$state/pids/collector.pid"
log_file="$state/logs/collector.log"
port=${ANALYTICS_COLLECTOR_PORT:-8080}

running() { [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null && grep -q "analytics" "/proc/$(cat "$pid_file")/cmdline"; }

case "${1:-}" in
  start)
    if running; then echo "collector already running (pid $(cat "$pid_file")) on 127.0.0.1:$port"; exit 0; fi
    mkdir -p "$(dirname "$pid_file")" "$(dirname "$log_file")"
    nohup .venv/bin/analytics collector --port "$port" >>"$log_file" 2>&1 &
    echo $! >"$pid_file"
    for _ in $(seq 1 120); do
      if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
        echo "collector running (pid $(cat "$pid_file")) on http://127.0.0.1:$port, log $log_file"; exit 0
      fi
      running || { echo "collector exited; last log lines:" >&2; tail -n 20 "$log_file" >&2; exit 1; }
      sleep 0.5
    done
    echo "collector not ready after 60 s; see $log_file" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pid_file")"; echo "collector stopped"; fi
    rm -f "$pid_file" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
