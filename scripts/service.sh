#!/usr/bin/env bash
# Runs one of the long-running services in the background for `make demo` (start) and stops it for
# `make down` (stop): collector, realtime (consumer), api. Its pid is in .state/pids/<name>.pid and
# its JSON log in .state/logs/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 start|stop collector|realtime|api" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1 name=$2
state=${ANALYTICS_STATE_DIR:-.state}
pid_file="$state/pids/$name.pid"
log_file="$state/logs/$name.log"
case "$name" in
  collector) port=${ANALYTICS_COLLECTOR_PORT:-8080}; cmd=(collector --port "$port"); ready="http://127.0.0.1:$port/readyz" ;;
  api) port=${ANALYTICS_API_PORT:-8000}; cmd=(api --port "$port"); ready="http://127.0.0.1:$port/healthz" ;;
  realtime) cmd=(realtime); ready="" ;;
  *) usage ;;
esac

running() { [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null && grep -q "analytics" "/proc/$(cat "$pid_file")/cmdline"; }

case "$action" in
  start)
    if running; then echo "$name already running (pid $(cat "$pid_file"))"; exit 0; fi
    mkdir -p "$(dirname "$pid_file")" "$(dirname "$log_file")"
    nohup .venv/bin/analytics "${cmd[@]}" >>"$log_file" 2>&1 &
    echo $! >"$pid_file"
    for _ in $(seq 1 120); do
      if [[ -z $ready ]] && sleep 1 && running; then echo "$name running (pid $(cat "$pid_file")), log $log_file"; exit 0; fi
      if [[ -n $ready ]] && curl -fsS "$ready" >/dev/null 2>&1; then
        echo "$name running (pid $(cat "$pid_file")) on ${ready%/*}, log $log_file"; exit 0
      fi
      running || { echo "$name exited; last log lines:" >&2; tail -n 20 "$log_file" >&2; exit 1; }
      sleep 0.5
    done
    echo "$name not ready after 60 s; see $log_file" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pid_file")"; echo "$name stopped"; fi
    rm -f "$pid_file" ;;
  *) usage ;;
esac
