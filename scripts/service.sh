#!/usr/bin/env bash
# Runs one of the long-running services of `make demo` in the background (start) and stops it for
# `make down` (stop): collector, realtime (consumer), loader (continuous: Kafka into the warehouse, its
# commits waiting while a dbt build holds the warehouse's writer lock), api, dagster (webserver and
# daemon, `dagster dev`: its schedules build the rollups; its minute job loads the warehouse itself
# only when no loader runs), traffic (live events from the generator into the collector). Each runs
# in a session of its own, so stop ends it with everything it started: SIGTERM (dagster: SIGINT) to
# the leader, after 30 s SIGTERM to the group, then SIGKILL.
# Its pid is in .state/pids/<name>.pid and its log in .state/logs/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 start|stop collector|realtime|loader|api|dagster|traffic" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1 name=$2
state=$(.venv/bin/python -c "from analytics_core.settings import get_settings; print(get_settings().state_dir)")
pid_file="$state/pids/$name.pid"
log_file="$state/logs/$name.log"
setting() { .venv/bin/python -c "from analytics_core.settings import get_settings; print(get_settings().$1)"; }
pattern="analytics"
signal=TERM
reset_signals='import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])'
case "$name" in
  collector) port=$(setting collector_port); cmd=(.venv/bin/analytics collector --port "$port"); ready="http://127.0.0.1:$port/readyz" ;;
  api) port=$(setting api_port); cmd=(.venv/bin/analytics api --port "$port"); ready="http://127.0.0.1:$port/healthz" ;;
  realtime) cmd=(.venv/bin/analytics realtime); ready="" ;;
  loader) cmd=(.venv/bin/analytics loader); ready="" ;;
  traffic)
    collector="http://127.0.0.1:$(setting collector_port)"
    # A new seed per start: the same seed again within the collector's 24 h dedupe window would send the
    # same message ids, and the collector would (rightly) drop them all as resends.
    cmd=(.venv/bin/analytics generate --to "$collector" --rate "${DEMO_RATE:-20}" --duration 31536000
         --seed "$(date +%s)" --no-progress)
    ready="" ;;
  dagster)
    port=$(setting dagster_port)
    case $state in /*) home=$state/dagster ;; *) home=$(pwd)/$state/dagster ;; esac
    # dagster.yaml's storage folders (.state/dagster/...) moved into this state folder. Written beside and
    # renamed: a dagster.yaml there may be a link to the repository's (older `make dagster`), which a
    # redirection would truncate before sed reads it.
    mkdir -p "$home" && sed "s#\.state/dagster#$home#g" dagster.yaml >"$home/dagster.yaml.new"
    mv -f "$home/dagster.yaml.new" "$home/dagster.yaml"
    export DAGSTER_HOME=$home
    cmd=(.venv/bin/dagster dev -m orchestration.definitions -h 127.0.0.1 -p "$port")
    pattern="dagster"
    signal=INT
    ready="http://127.0.0.1:$port/server_info" ;;
  *) usage ;;
esac

running() { [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null && grep -q "$pattern" "/proc/$(cat "$pid_file")/cmdline"; }
# The process just started is there and not a zombie. (Not `running`: until setsid has exec'd the service its
# command line is still this script's, and a start was reported as exited while it came up.)
started() { local stat; stat=$(ps -o stat= -p "$(cat "$pid_file")" 2>/dev/null) && [[ $stat != Z* ]]; }
# A process of the group that is not a zombie (one whose parent has not reaped it yet is gone already).
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'; }

case "$action" in
  start)
    if running; then echo "$name already running (pid $(cat "$pid_file"))"; exit 0; fi
    mkdir -p "$(dirname "$pid_file")" "$(dirname "$log_file")"
    # Signals the caller ignores (a background job ignores SIGINT, some runners SIGTERM too) would stay
    # ignored in the service: they are reset to their defaults before it starts, so stop can reach it.
    setsid nohup .venv/bin/python -c "$reset_signals" "${cmd[@]}" >>"$log_file" 2>&1 < /dev/null &
    echo $! >"$pid_file"
    for _ in $(seq 1 240); do
      if [[ -z $ready ]] && sleep 1 && running; then echo "$name running (pid $(cat "$pid_file")), log $log_file"; exit 0; fi
      if [[ -n $ready ]] && curl -fsS "$ready" >/dev/null 2>&1; then
        echo "$name running (pid $(cat "$pid_file")) on ${ready%/*}, log $log_file"; exit 0
      fi
      started || { echo "$name exited; last log lines:" >&2; tail -n 20 "$log_file" >&2; exit 1; }
      sleep 0.5
    done
    echo "$name not ready after 2 minutes; see $log_file" >&2; exit 1 ;;
  stop)
    if [[ -f $pid_file ]]; then
      pid=$(cat "$pid_file")
      # The pid leads its own process group (setsid). The leader is asked first (dagster dev shuts its
      # webserver, daemon and code servers down on SIGINT, as on Ctrl-C), then the whole group.
      if group_alive "$pid"; then
        kill "-$signal" "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do group_alive "$pid" || break; sleep 0.5; done
        if group_alive "$pid"; then
          kill -TERM -- "-$pid" 2>/dev/null || true
          for _ in $(seq 1 10); do group_alive "$pid" || break; sleep 0.5; done
        fi
        if group_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; echo "$name killed"; else echo "$name stopped"; fi
      fi
      rm -f "$pid_file"
    fi ;;
  *) usage ;;
esac
