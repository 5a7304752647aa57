#!/usr/bin/env bash
# End to end: `sluice run` draining a file source through an HTTP step into
# `sluice receiver`, beside the ceiling wrk reaches on the same receiver in
# the same run. The issue's benchmark: 200,000 jobs, 20 ms latency,
# concurrency 1,000; targets sluice >= 0.7 x wrk and peak RSS <= 120 MB.
# Receiver, wrk and sluice share the machine's cores, so the ceiling is what
# this machine reaches, not what the receiver could do alone.
# JOBS=20000 bench/e2e-file.sh for a quicker look.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/file-workload.sh

JOBS="${JOBS:-200000}"
CONCURRENCY="${CONCURRENCY:-1000}"
LATENCY_MS="${LATENCY_MS:-20}"
WRK_SECS="${WRK_SECS:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
mkdir -p "$CARGO_TARGET_DIR"

if ! command -v wrk >/dev/null; then
    echo "bench/e2e-file.sh: installing Debian's wrk for the ceiling" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
# The rev the build starts from; -dirty when crates/ has uncommitted edits.
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo -dirty)"
cargo build --quiet --locked --release -p sluice
SLUICE="$CARGO_TARGET_DIR/release/sluice"

WORK="$(mktemp -d)"
RECEIVER_PID=""
cleanup() { [ -z "$RECEIVER_PID" ] || kill "$RECEIVER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Port 0 lets the kernel pick a free port; the tiny race before the receiver
# binds it is acceptable for a bench.
PORT="$(free_port)"
"$SLUICE" receiver --listen "127.0.0.1:$PORT" --latency-ms "$LATENCY_MS" >"$WORK/receiver.log" 2>&1 &
RECEIVER_PID=$!
wait_port "$PORT" "$RECEIVER_PID" || { cat "$WORK/receiver.log" >&2; exit 1; }

# Receiver CPU seconds so far: shows whether it, not the client, is the limit.
TICKS="$(getconf CLK_TCK)"
receiver_cpu() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$RECEIVER_PID/stat"; }

# Same body shape as the sluice step sends; a static request is wrk's fastest.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/jobs/123456"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id": 123456, "user": "user-123456@example.com", "n": 1}'
LUA
rc0="$(receiver_cpu)"
/usr/bin/time -f '%M %U %S' -o "$WORK/wrk.time" \
    wrk -t 2 -c "$CONCURRENCY" -d "${WRK_SECS}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:$PORT/" >"$WORK/wrk.out"
rc1="$(receiver_cpu)"

# The checkpoint stays on (the default users run); a stale one would resume.
file_workload "$WORK" "$JOBS" "$PORT" "$CONCURRENCY"
file_workload_reset "$WORK"
status=0  # NO_COLOR: its log lines go to a file, then to this output
NO_COLOR=1 /usr/bin/time -f '%M %U %S' -o "$WORK/sluice.time" \
    "$SLUICE" run -c "$WORK/bench.toml" --progress off 2>"$WORK/sluice.err" || status=$?
rc2="$(receiver_cpu)"
kill -INT "$RECEIVER_PID"; wait "$RECEIVER_PID" || true; RECEIVER_PID=""

echo "== wrk"; cat "$WORK/wrk.out"
echo "== sluice run (exit $status)"; cat "$WORK/sluice.err"
echo "== receiver"; cat "$WORK/receiver.log"

wrk_rps="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")"
wrk_p50="$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out")"
wrk_p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
read -r wrk_kb wrk_u wrk_s < <(tail -1 "$WORK/wrk.time")
wrk_secs="$(awk '/requests in/ {sub(/s,$/, "", $4); print $4}' "$WORK/wrk.out")"
jps="$(grep -o '([0-9.]* jobs/s)' "$WORK/sluice.err" | tr -d '(' | cut -d' ' -f1)"
secs="$(grep -o 'settled in [0-9.]* s' "$WORK/sluice.err" | cut -d' ' -f3)"
p50="$(grep -o 'p50 [^,]*' "$WORK/sluice.err" | cut -d' ' -f2-)"
p99="$(grep -o 'p99 [^,]*' "$WORK/sluice.err" | cut -d' ' -f2-)"
succeeded="$(grep -o 'succeeded [0-9]*' "$WORK/sluice.err" | cut -d' ' -f2)"
# time(1) puts "Command exited with non-zero status" first on failure.
read -r kb u s < <(tail -1 "$WORK/sluice.time")

echo
echo "command: JOBS=$JOBS CONCURRENCY=$CONCURRENCY LATENCY_MS=$LATENCY_MS WRK_SECS=$WRK_SECS bench/e2e-file.sh"
echo "date: $(date -u '+%F %T UTC'), nproc: $(nproc), git: $rev"
echo "receiver, wrk and sluice share all $(nproc) cores; receiver CPU:" \
    "$(awk -v a="$rc0" -v b="$rc1" -v d="$wrk_secs" 'BEGIN {printf "%.2f s (%.0f%% of a core) during wrk", b - a, 100 * (b - a) / d}')," \
    "$(awk -v a="$rc1" -v b="$rc2" -v d="$secs" 'BEGIN {printf "%.2f s (%.0f%% of a core) during sluice", b - a, 100 * (b - a) / d}')"
echo
echo "| run | throughput /s | p50 | p99 | peak RSS MB | CPU s | vs wrk |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -v r="$wrk_rps" -v a="$wrk_p50" -v b="$wrk_p99" -v k="$wrk_kb" -v c="$wrk_u" -v d="$wrk_s" -v n="$CONCURRENCY" \
    'BEGIN {printf "| wrk ceiling (-t 2 -c %d, req/s) | %.0f | %s | %s | %.1f | %.2f | 1.00 |\n", n, r, a, b, k / 1024, c + d}'
awk -v r="$jps" -v a="$p50" -v b="$p99" -v k="$kb" -v c="$u" -v d="$s" -v w="$wrk_rps" -v n="$JOBS" \
    'BEGIN {printf "| sluice run (%d jobs, jobs/s) | %.0f | %s | %s | %.1f | %.2f | %.2f |\n", n, r, a, b, k / 1024, c + d, r / w}'
echo
awk -v r="$jps" -v w="$wrk_rps" -v k="$kb" 'BEGIN {
    printf "targets: throughput >= 0.7 x wrk: %s (%.2f); peak RSS <= 120 MB: %s (%.1f MB)\n",
        (r >= 0.7 * w ? "met" : "MISSED"), r / w, (k / 1024 <= 120 ? "met" : "MISSED"), k / 1024 }'
[ "$status" = 0 ] && [ "$succeeded" = "$JOBS" ] || { echo "sluice: exit $status, succeeded ${succeeded:-?} of $JOBS" >&2; exit 1; }
