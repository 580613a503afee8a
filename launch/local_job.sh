#!/usr/bin/env bash
# Run `python -m selfplay.run [preset] [key=value ...]` as a Ray job on this machine:
#
#   bash launch/local_job.sh iter=3 run.dir=runs/job
#
# Uses the Ray head whose job server answers at 127.0.0.1:$SELFPLAY_DASHBOARD_PORT (default 8265) if
# there is one. Otherwise it starts a head (dashboard on loopback, token auth), with its own temp dir and free ports so that it
# cannot collide with another Ray instance here (e.g. a test's in-process `ray.init()`), and stops it on
# exit. SELFPLAY_RAY_TEMP_DIR names that temp dir (keep it short: Ray's socket paths must fit 107 bytes).
# Auth: token mode (Ray's own default once ~/.ray/auth_token exists), for the head and the job client alike.
set -euo pipefail

caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The job runs in a throwaway copy of the repo (--working-dir), so a relative run.dir would be lost with it:
# resolve it against the caller's directory, as `python -m selfplay.run` would.
args=() run_dir=runs/default
for a in "$@"; do
  if [[ $a == run.dir=* ]]; then run_dir=${a#run.dir=}; else args+=("$a"); fi
done
[[ $run_dir == /* || $run_dir == "~"* ]] || run_dir=$caller_dir/$run_dir
args+=("run.dir=$run_dir")

export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
[[ $RAY_AUTH_MODE != token ]] || ray get-auth-token --generate >/dev/null

free_port() {  # ${1:-0} if no one listens on it at any address (Ray binds the node's IP), else a free one
  python -c 'import socket, sys
for p in (int(sys.argv[1]), 0):
    try: s = socket.socket(); s.bind(("", p)); print(s.getsockname()[1]); break
    except OSError: pass' "${1:-0}"
}

stop_head() {  # on exit: stop the head this script started; keep its logs only after a failure
  local status=$?
  [[ -z ${job_id:-} ]] || ray job stop "$job_id" >/dev/null 2>&1 || true  # else an interrupted driver outlives the head
  kill "$head_pid" 2>/dev/null && wait "$head_pid" 2>/dev/null || true
  if [[ $status == 0 && -n ${remove_temp_dir:-} ]]; then rm -rf "$temp_dir"; fi
}

dashboard_port=${SELFPLAY_DASHBOARD_PORT:-8265}
export RAY_ADDRESS=http://127.0.0.1:$dashboard_port
if ray job list >/dev/null 2>&1; then
  echo "using the Ray head at $RAY_ADDRESS"
else
  dashboard_port=$(free_port "$dashboard_port")
  export RAY_ADDRESS=http://127.0.0.1:$dashboard_port
  temp_dir=${SELFPLAY_RAY_TEMP_DIR:-$(mktemp -d /tmp/selfplay-ray.XXXXXX)}
  mkdir -p "$temp_dir"
  [[ -n ${SELFPLAY_RAY_TEMP_DIR:-} ]] || remove_temp_dir=1  # removed after a success, kept after a failure
  echo "starting a Ray head at $RAY_ADDRESS (logs: $temp_dir)"
  # --block keeps `ray start` running: killing it stops the whole head. setsid keeps a Ctrl-C (or a kill of
  # this script's process group) from reaching it before the trap has stopped the job.
  setsid ray start --head --block --node-ip-address=127.0.0.1 --port="$(free_port 6379)" \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
    --dashboard-agent-listen-port="$(free_port)" --ray-client-server-port="$(free_port)" \
    --temp-dir="$temp_dir" --disable-usage-stats >"$temp_dir/head.log" 2>&1 &
  head_pid=$!
  trap stop_head EXIT
  trap 'exit 130' INT TERM
  for i in $(seq 120); do  # up once `ray start` has seen every process start and the job API answers
    grep -q "Ray runtime started" "$temp_dir/head.log" && ray job list >/dev/null 2>&1 && break
    if ((i == 120)) || ! kill -0 "$head_pid" 2>/dev/null; then
      echo "the Ray head did not start:" >&2; cat "$temp_dir/head.log" >&2; exit 1
    fi
    sleep 1
  done
fi

# Ray already skips .git/ and what .gitignore lists; the excludes keep it so if those rules change.
job_id=selfplay-$(date +%Y%m%d-%H%M%S)-$$
ray job submit --submission-id "$job_id" --working-dir . --runtime-env-json '{"excludes": [".git/", "runs/"]}' \
  -- python -m selfplay.run "${args[@]}"
echo "metrics: $run_dir/metrics.jsonl"
