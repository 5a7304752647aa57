#!/usr/bin/env bash
# A/B of two sluice binaries on bench/e2e-file.sh's workload, in one run: one
# `sluice receiver` (NEW_BIN's), the same NDJSON file and config, and
# `sluice run --progress off` of each binary in turn on a fresh copy of the
# input (no checkpoint or failures left from the run before). The order
# alternates by round, ABBA: odd rounds run base then new, even rounds new
# then base, so neither binary always runs first or on the warmer machine.
# Prints one line per run, then per binary the median jobs/s and the ratio
# new/base. Compare the ratio, not the absolute figures (a noisy machine).
#
#   bench/ab-e2e-file.sh BASE_BIN NEW_BIN
#   JOBS=100000 ROUNDS=3 CONCURRENCY=1000 LATENCY_MS=20 (the defaults);
#   RUN_TIMEOUT=600 bounds each run in seconds.
# Build a binary at another commit with a worktree and its own target dir:
#   git worktree add /tmp/sluice-base REV && cd /tmp/sluice-base &&
#   CARGO_TARGET_DIR=~/.cache/sluice/target-base cargo build --release --locked -p sluice --bin sluice
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/file-workload.sh

if [ $# -ne 2 ]; then
    echo "usage: bench/ab-e2e-file.sh BASE_BIN NEW_BIN" >&2
    exit 2
fi
BASE_BIN="$(realpath "$1")"
NEW_BIN="$(realpath "$2")"
for b in "$BASE_BIN" "$NEW_BIN"; do
    [ -x "$b" ] || { echo "bench/ab-e2e-file.sh: $b is not an executable" >&2; exit 2; }
done
JOBS="${JOBS:-100000}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-1000}"
LATENCY_MS="${LATENCY_MS:-20}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"

if [ ! -x /usr/bin/time ]; then
    echo "bench/ab-e2e-file.sh: installing Debian's time for wall time and peak RSS" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq time >/dev/null
fi

WORK="$(mktemp -d)"
RECEIVER_PID=""
TIME_PID=""
cleanup() {
    # A run under way: time(1) -> timeout(1) -> sluice; timeout passes the
    # TERM on to sluice.
    if [ -n "$TIME_PID" ]; then
        pkill -TERM -P "$TIME_PID" 2>/dev/null || true
        wait "$TIME_PID" 2>/dev/null || true
    fi
    if [ -n "$RECEIVER_PID" ]; then
        kill "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$(free_port)"
"$NEW_BIN" receiver --listen "127.0.0.1:$PORT" --latency-ms "$LATENCY_MS" >"$WORK/receiver.log" 2>&1 &
RECEIVER_PID=$!
wait_port "$PORT" "$RECEIVER_PID" || { cat "$WORK/receiver.log" >&2; exit 1; }
TICKS="$(getconf CLK_TCK)"
receiver_cpu() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$RECEIVER_PID/stat"; }

# Every run reads $RUN/jobs.ndjson, copied afresh from the master each time;
# the config names that path.
RUN="$WORK/run"
mkdir -p "$RUN"
file_workload "$RUN" "$JOBS" "$PORT" "$CONCURRENCY"
mv "$RUN/jobs.ndjson" "$WORK/jobs.master"
mv "$RUN/bench.toml" "$WORK/bench.toml"

sha() { sha256sum "$1" | cut -c1-12; }
echo "command: JOBS=$JOBS ROUNDS=$ROUNDS CONCURRENCY=$CONCURRENCY LATENCY_MS=$LATENCY_MS bench/ab-e2e-file.sh $1 $2"
echo "date: $(date -u '+%F %T UTC'), nproc: $(nproc), load:$(uptime | sed 's/.*load average://')"
echo "base: $BASE_BIN (sha256 $(sha "$BASE_BIN"), built $(date -u -r "$BASE_BIN" '+%F %T UTC'))"
echo "new:  $NEW_BIN (sha256 $(sha "$NEW_BIN"), built $(date -u -r "$NEW_BIN" '+%F %T UTC'))"
echo "receiver: new binary, 127.0.0.1:$PORT, ${LATENCY_MS} ms; order ABBA (odd rounds base first)"
echo

# run_one LABEL BIN ROUND: one `sluice run`; appends to $WORK/results
# "label round jobs/s wall_s rss_mb cpu_s".
run_one() {
    local label="$1" bin="$2" round="$3" status=0
    rm -f "$RUN"/jobs.ndjson*
    file_workload_reset "$RUN"
    cp "$WORK/jobs.master" "$RUN/jobs.ndjson"
    local err="$WORK/$label-$round.err" tm="$WORK/$label-$round.time"
    local rc0 rc1
    rc0="$(receiver_cpu)"
    NO_COLOR=1 /usr/bin/time -f '%e %M %U %S' -o "$tm" \
        timeout "$RUN_TIMEOUT" "$bin" run --progress off -c "$WORK/bench.toml" 2>"$err" &
    TIME_PID=$!
    wait "$TIME_PID" || status=$?
    TIME_PID=""
    rc1="$(receiver_cpu)"
    local jps secs p50 p99 succeeded wall kb u s
    jps="$(grep -o '([0-9.]* jobs/s)' "$err" | tr -d '(' | cut -d' ' -f1 || true)"
    secs="$(grep -o 'settled in [0-9.]* s' "$err" | cut -d' ' -f3 || true)"
    p50="$(grep -o 'p50 [^,]*' "$err" | cut -d' ' -f2- || true)"
    p99="$(grep -o 'p99 [^,]*' "$err" | cut -d' ' -f2- || true)"
    succeeded="$(grep -o 'succeeded [0-9]*' "$err" | cut -d' ' -f2 || true)"
    # time(1) puts "Command exited with non-zero status" first on failure.
    read -r wall kb u s < <(tail -1 "$tm")
    if [ "$status" != 0 ] || [ "${succeeded:-}" != "$JOBS" ] || [ -z "$jps" ]; then
        echo "round $round $label: exit $status (124: timed out after ${RUN_TIMEOUT}s), succeeded ${succeeded:-?} of $JOBS" >&2
        tail -20 "$err" >&2
        exit 1
    fi
    awk -v l="$label" -v r="$round" -v j="$jps" -v t="$secs" -v w="$wall" -v k="$kb" -v u="$u" -v s="$s" \
        -v a="$p50" -v b="$p99" -v c0="$rc0" -v c1="$rc1" -v n="$succeeded" 'BEGIN {
        printf "round %d %-4s: %6.0f jobs/s (settled in %s s), wall %.2f s, peak RSS %.1f MB, CPU %.2f s, p50 %s, p99 %s, receiver CPU %.2f s, succeeded %d\n",
            r, l, j, t, w, k / 1024, u + s, a, b, c1 - c0, n }'
    echo "$label $round $jps $wall $(awk -v k="$kb" 'BEGIN {printf "%.1f", k / 1024}') $(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}')" >>"$WORK/results"
}

for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        run_one base "$BASE_BIN" "$round"
        run_one new "$NEW_BIN" "$round"
    else
        run_one new "$NEW_BIN" "$round"
        run_one base "$BASE_BIN" "$round"
    fi
done

kill -INT "$RECEIVER_PID"; wait "$RECEIVER_PID" || true; RECEIVER_PID=""

# median LABEL COLUMN (3 jobs/s, 4 wall, 5 RSS, 6 CPU)
median() {
    awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$WORK/results" | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
range() {
    awk -v l="$1" '$1 == l {print $3}' "$WORK/results" | sort -g |
        awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f-%.0f", lo, hi}'
}

echo
echo "load at the end:$(uptime | sed 's/.*load average://')"
echo
echo "| binary | runs | median jobs/s | range jobs/s | median wall s | median peak RSS MB | median CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for l in base new; do
    printf "| %s | %d | %.0f | %s | %.2f | %.1f | %.2f |\n" "$l" "$ROUNDS" \
        "$(median "$l" 3)" "$(range "$l")" "$(median "$l" 4)" "$(median "$l" 5)" "$(median "$l" 6)"
done
echo
awk -v b="$(median base 3)" -v n="$(median new 3)" -v bc="$(median base 6)" -v nc="$(median new 6)" 'BEGIN {
    printf "ratio new/base, median jobs/s: %.3f (median CPU s: %.3f)\n", n / b, nc / bc }'
