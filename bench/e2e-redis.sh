#!/usr/bin/env bash
# Laravel on Redis end to end: N `App\Jobs\ProcessReport` jobs on a Laravel
# Redis queue (pushed by `sluice send`, byte for byte what dispatch()
# writes; the push is not timed) drained by `sluice run` (redis source,
# format laravel -> HTTP POST {"report": id} to `sluice receiver` at 20 ms
# -> delete), beside the ceiling wrk reaches on the same receiver in the
# same run, and beside fleets of PHP processes each running Laravel's own
# Worker (tests/interop/laravel/work.php, as `queue:work redis`) on a queue
# of their own (FLEET_JOBS jobs: PHP is slow, so the fleets' count is its
# own knob and the comparison is of rates) with a fresh receiver each.
# The issue's benchmark: N 200,000, concurrency 1,000, latency 20 ms,
# fleets of 16 and 64. Targets: sluice >= 0.7 x wrk; sluice >= 10 x the
# 64-process fleet's jobs/s at <= 1/15 of its memory (the sum of its
# processes' peak RSS).
#
# Rates are jobs over wall time from process start to exit (sluice's own
# summary figure, which starts with its pipeline, is printed too). p50/p99
# are sluice's per-attempt job latency (the HTTP step); Laravel's worker
# logs whole seconds only, so for the fleets there is no percentile, only
# the mean time per job per worker (processes x wall / jobs). Memory is
# /usr/bin/time's %M (peak RSS) of each process; for the fleets also the
# peak of their summed PSS, sampled every second, since RSS counts PHP's
# shared pages once per process. Receiver, wrk, Redis, sluice and PHP share
# the machine's cores.
#
# Knobs: N CONCURRENCY LATENCY_MS WRK_SECS FLEETS ("16 64"; "" for none);
# SLUICE_BIN runs that binary instead of building this checkout's.
# FLEET_JOBS REDIS_HOST REDIS_PORT. N=20000 FLEET_JOBS=5000 for a quick look.
# Each run uses a fresh key prefix (a fresh queue per phase) and deletes
# every key under it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N="${N:-200000}"
CONCURRENCY="${CONCURRENCY:-1000}"
LATENCY_MS="${LATENCY_MS:-20}"
WRK_SECS="${WRK_SECS:-10}"
FLEETS="${FLEETS-16 64}"
FLEET_JOBS="${FLEET_JOBS:-20000}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
mkdir -p "$CARGO_TARGET_DIR"

if ! command -v wrk >/dev/null; then
    echo "bench/e2e-redis.sh: installing Debian's wrk for the ceiling" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
answers "$REDIS_PORT" || { echo "bench/e2e-redis.sh: nothing answers on Redis's port $REDIS_PORT; start it with REQUIRED=redis scripts/services" >&2; exit 1; }
[ -z "$FLEETS" ] || scripts/laravel >/dev/null
if [ -n "${SLUICE_BIN:-}" ]; then
    # A binary built elsewhere (an A/B against another revision).
    SLUICE="$SLUICE_BIN"
    rev="given: $SLUICE_BIN"
else
    rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo -dirty)"
    cargo build --quiet --locked --release -p sluice --bin sluice
    SLUICE="$CARGO_TARGET_DIR/release/sluice"
fi

WORK="$(mktemp -d)"
# Laravel's prefix is `{app}_database_`; a fresh one per run keeps this run's
# keys apart from anything else on the server and easy to delete.
PREFIX="sluicebench_$(date +%s)_$$_"
RECEIVER_PID=""
FLEET_PIDS=""
SAMPLER=""
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
delete_keys() { rcli --scan --pattern "$1" | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null; }
cleanup() {
    for pid in $FLEET_PIDS; do pkill -P "$pid" 2>/dev/null || true; done
    for pid in $SAMPLER $FLEET_PIDS $RECEIVER_PID; do kill "$pid" 2>/dev/null || true; done
    delete_keys "${PREFIX}*" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

TICKS="$(getconf CLK_TCK)"
PAGE="$(getconf PAGESIZE)"
receiver_cpu() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$RECEIVER_PID/stat"; }
now() { date +%s.%N; }

# A receiver per phase (same binary and flags), so the count it prints when
# stopped is that phase's alone. Sets PORT; logs to $WORK/$1.receiver.
start_receiver() {
    PORT="$(free_port)"
    "$SLUICE" receiver --listen "127.0.0.1:$PORT" --latency-ms "$LATENCY_MS" >"$WORK/$1.receiver" 2>&1 &
    RECEIVER_PID=$!
    wait_port "$PORT" "$RECEIVER_PID" || { cat "$WORK/$1.receiver" >&2; exit 1; }
}
stop_receiver() { kill -INT "$RECEIVER_PID"; wait "$RECEIVER_PID" || true; RECEIVER_PID=""; }
accepted() { grep -o '([0-9]* accepted)' "$WORK/$1.receiver" | tr -d '(' | cut -d' ' -f1; }

# push QUEUE COUNT: ProcessReport jobs 1..COUNT, as dispatch() writes them.
push() {
    local q="$1" n="$2" t0 t1 len
    t0="$(now)"
    seq 1 "$n" | awk '{printf "{\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": %d}\n", $1}' |
        "$SLUICE" send --to redis --url "$REDIS_URL" --queue "$q" --prefix "$PREFIX" --stdin command-json --print none
    t1="$(now)"
    len="$(rcli llen "${PREFIX}queues:$q")"
    [ "$len" = "$n" ] || { echo "bench/e2e-redis.sh: pushed $n jobs but ${PREFIX}queues:$q holds $len" >&2; exit 1; }
    awk -v n="$n" -v q="${PREFIX}queues:$q" -v a="$t0" -v b="$t1" \
        'BEGIN {printf "pushed %d jobs to %s in %.2f s (%.0f jobs/s; not timed)\n", n, q, b - a, n / (b - a)}' | tee -a "$WORK/pushes"
}
# "ready reserved delayed" left on QUEUE, then its keys deleted.
leftover_and_clean() {
    local k="${PREFIX}queues:$1"
    echo "$(rcli llen "$k") $(rcli zcard "$k:reserved") $(rcli zcard "$k:delayed")"
    delete_keys "$k*"
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- wrk ceiling and sluice, on one receiver (as bench/e2e-file.sh) -------
start_receiver sluice
# The step's request: the same path and body shape; static, wrk's fastest.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/reports"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"report": 123456}'
LUA
rc0="$(receiver_cpu)"
/usr/bin/time -f '%M %U %S' -o "$WORK/wrk.time" \
    wrk -t 2 -c "$CONCURRENCY" -d "${WRK_SECS}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:$PORT/" >"$WORK/wrk.out"
rc1="$(receiver_cpu)"

push sluice "$N"
cat >"$WORK/sluice.toml" <<TOML
[[pipeline]]
name = "reports"
concurrency = $CONCURRENCY

[pipeline.source]
type = "redis"
url = "$REDIS_URL"
queue = "sluice"
prefix = "$PREFIX"
format = "laravel"

[[pipeline.step]]
type = "http"
url = "http://127.0.0.1:$PORT/reports"
body = '{"report": {{ job.command.reportId }}}'
TOML
sluice_status=0
NO_COLOR=1 /usr/bin/time -f '%M %U %S %e' -o "$WORK/sluice.time" \
    "$SLUICE" run -c "$WORK/sluice.toml" --progress off --stop-when-empty 2>"$WORK/sluice.err" || sluice_status=$?
rc2="$(receiver_cpu)"
stop_receiver
sluice_failed_list="$(rcli llen "${PREFIX}sluice:failed:sluice")"
read -r s_ready s_reserved s_delayed < <(leftover_and_clean sluice)

echo "== wrk"; cat "$WORK/wrk.out"
echo "== sluice run (exit $sluice_status)"; cat "$WORK/sluice.err"
echo "== receiver (wrk + sluice)"; cat "$WORK/sluice.receiver"

# --- PHP fleets: K Laravel workers on a queue of their own ---------------
# Peak of the fleet's summed PSS and RSS (MB), sampled each second.
sample_fleet() {
    local out="$1" pids="$2" pss rss max_pss=0 max_rss=0 php
    while :; do
        pss=0; rss=0
        for p in $pids; do
            php="$(pgrep -P "$p" 2>/dev/null || true)"
            [ -n "$php" ] && [ -r "/proc/$php/smaps_rollup" ] || continue
            read -r a b < <(awk '/^Rss:/ {r = $2} /^Pss:/ {p = $2} END {print p + 0, r + 0}' "/proc/$php/smaps_rollup" 2>/dev/null || echo "0 0")
            pss=$((pss + a)); rss=$((rss + b))
        done
        [ "$pss" -gt "$max_pss" ] && max_pss=$pss
        [ "$rss" -gt "$max_rss" ] && max_rss=$rss
        echo "$max_pss $max_rss" >"$out"
        sleep 1
    done
}
# One worker on an empty queue: what starting one PHP worker costs.
if [ -n "$FLEETS" ]; then
    t0="$(now)"
    REDIS_HOST="$REDIS_HOST" REDIS_PORT="$REDIS_PORT" REDIS_PREFIX="$PREFIX" \
        php tests/interop/laravel/work.php empty --stop-when-empty --sleep=1 >/dev/null
    php_start="$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}')"
fi
for K in $FLEETS; do
    q="php$K"
    push "$q" "$FLEET_JOBS"
    start_receiver "$q"
    rc_a="$(receiver_cpu)"
    FLEET_PIDS=""
    t0="$(now)"
    for i in $(seq "$K"); do
        REDIS_HOST="$REDIS_HOST" REDIS_PORT="$REDIS_PORT" REDIS_PREFIX="$PREFIX" \
            POST_URL="http://127.0.0.1:$PORT/reports" HANDLED_LIST="handled:$q" \
            /usr/bin/time -f '%M %U %S' -o "$WORK/$q.$i.time" \
            php tests/interop/laravel/work.php "$q" --stop-when-empty --sleep=1 \
            >"$WORK/$q.$i.out" 2>"$WORK/$q.$i.err" &
        FLEET_PIDS="$FLEET_PIDS $!"
    done
    sample_fleet "$WORK/$q.sampled" "$FLEET_PIDS" &
    SAMPLER=$!
    exits=""
    for p in $FLEET_PIDS; do
        st=0; wait "$p" || st=$?
        exits="$exits $st"
    done
    t1="$(now)"
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    FLEET_PIDS=""; SAMPLER=""
    rc_b="$(receiver_cpu)"
    stop_receiver
    handled="$(rcli llen "${PREFIX}handled:$q")"
    delete_keys "${PREFIX}handled:$q"
    read -r ready reserved delayed < <(leftover_and_clean "$q")
    processed="$(cat "$WORK/$q".*.out | grep -c ' Processed: ' || true)"
    failed="$(cat "$WORK/$q".*.out | grep -c ' Failed: ' || true)"
    errlines="$(cat "$WORK/$q".*.err | wc -l)"
    nonzero="$(tr ' ' '\n' <<<"$exits" | grep -c '^[1-9]' || true)"
    # time(1) puts "Command exited with non-zero status" first on failure.
    read -r kb_sum kb_max cpu < <(for f in "$WORK/$q".*.time; do tail -1 "$f"; done |
        awk '{k += $1; if ($1 > m) m = $1; c += $2 + $3} END {printf "%d %d %.2f\n", k, m, c}')
    read -r pss_kb rss_kb < <(cat "$WORK/$q.sampled" 2>/dev/null || echo "0 0")
    acc="$(accepted "$q")"
    echo "$K $processed $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') $kb_sum $kb_max $cpu $pss_kb $rss_kb ${acc:-?} $failed $errlines $nonzero $handled $ready $reserved $delayed $rc_a $rc_b" >>"$WORK/fleets"
    echo "== fleet of $K Laravel workers: $processed Processed, $failed Failed, $errlines stderr lines, $nonzero non-zero exits"
    cat "$WORK/$q".*.err | sort | uniq -c | sort -rn | head -5
    cat "$WORK/$q.receiver"
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- figures ---------------------------------------------------------------
wrk_rps="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")"
wrk_n="$(awk '/requests in/ {print $1}' "$WORK/wrk.out")"
wrk_secs="$(awk '/requests in/ {sub(/s,$/, "", $4); print $4}' "$WORK/wrk.out")"
wrk_p50="$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out")"
wrk_p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
read -r wrk_kb wrk_u wrk_s < <(tail -1 "$WORK/wrk.time")
summary_jps="$(grep -o '([0-9.]* jobs/s)' "$WORK/sluice.err" | tr -d '(' | cut -d' ' -f1)"
summary_secs="$(grep -o 'settled in [0-9.]* s' "$WORK/sluice.err" | cut -d' ' -f3)"
p50="$(grep -o 'p50 [^,]*' "$WORK/sluice.err" | cut -d' ' -f2-)"
p99="$(grep -o 'p99 [^,]*' "$WORK/sluice.err" | cut -d' ' -f2-)"
succeeded="$(grep -o 'succeeded [0-9]*' "$WORK/sluice.err" | cut -d' ' -f2)"
read -r kb u s wall < <(tail -1 "$WORK/sluice.time")
jps="$(awk -v n="${succeeded:-0}" -v w="$wall" 'BEGIN {printf "%.0f", n / w}')"

echo
echo "command: N=$N CONCURRENCY=$CONCURRENCY LATENCY_MS=$LATENCY_MS WRK_SECS=$WRK_SECS FLEETS=\"$FLEETS\" FLEET_JOBS=$FLEET_JOBS bench/e2e-redis.sh"
echo "date: $(date -u '+%F %T UTC'), nproc: $(nproc), git: $rev, load average $load_start at the start, $load_end at the end"
echo "redis: $(rcli info server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}') on $REDIS_HOST:$REDIS_PORT; php: $(php -r 'echo PHP_VERSION;' 2>/dev/null || echo -)"
cat "$WORK/pushes"
echo "receiver CPU:" \
    "$(awk -v a="$rc0" -v b="$rc1" -v d="$wrk_secs" 'BEGIN {printf "%.2f s (%.0f%% of a core) during wrk", b - a, 100 * (b - a) / d}')," \
    "$(awk -v a="$rc1" -v b="$rc2" -v d="$wall" 'BEGIN {printf "%.2f s (%.0f%% of a core) during sluice", b - a, 100 * (b - a) / d}')"
echo "sluice: $succeeded succeeded, wall $wall s (its summary: ${summary_secs:-?} s, ${summary_jps:-?} jobs/s);" \
    "left on the queue: ready $s_ready, reserved $s_reserved, delayed $s_delayed, dead-lettered $sluice_failed_list"
[ -z "$FLEETS" ] || echo "one Laravel worker on an empty queue starts and exits in $php_start s"
while read -r K n w kb_sum kb_max cpu pss rss acc failed errl nz handled ready reserved delayed ra rb; do
    awk -v K="$K" -v n="$n" -v w="$w" -v m="$kb_max" -v p="$pss" -v r="$rss" -v acc="$acc" -v h="$handled" \
        -v l="$LATENCY_MS" -v ra="$ra" -v rb="$rb" -v j="$FLEET_JOBS" \
        'BEGIN {printf "fleet %d: %d of %d jobs Processed, receiver accepted %s, handled list %d; mean %.1f ms per job per worker (the latency alone allows %.0f jobs/s); largest process %.1f MB; summed PSS peak %.1f MB, summed RSS peak %.1f MB (sampled each 1 s); receiver CPU %.2f s (%.0f%% of a core)\n",
            K, n, j, acc, h, 1000 * K * w / n, K * 1000 / l, m / 1024, p / 1024, r / 1024, rb - ra, 100 * (rb - ra) / w}'
    echo "fleet $K: $failed Failed, $errl stderr lines, $nz non-zero exits; left on the queue: ready $ready, reserved $reserved, delayed $delayed"
done < <(cat "$WORK/fleets" 2>/dev/null)
echo
echo "| run | jobs | wall s | jobs/s | p50 | p99 | peak RSS MB | CPU s | vs wrk | sluice jobs/s / this |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -v r="$wrk_rps" -v n="$wrk_n" -v w="$wrk_secs" -v a="$wrk_p50" -v b="$wrk_p99" -v k="$wrk_kb" -v c="$wrk_u" -v d="$wrk_s" -v cc="$CONCURRENCY" -v j="$jps" \
    'BEGIN {printf "| wrk ceiling (-t 2 -c %d, requests) | %d | %.2f | %.0f | %s | %s | %.1f | %.2f | 1.00 | %.2f |\n", cc, n, w, r, a, b, k / 1024, c + d, j / r}'
awk -v r="$jps" -v n="${succeeded:-0}" -v w="$wall" -v a="$p50" -v b="$p99" -v k="$kb" -v c="$u" -v d="$s" -v x="$wrk_rps" -v cc="$CONCURRENCY" \
    'BEGIN {printf "| sluice run (concurrency %d) | %d | %.2f | %.0f | %s | %s | %.1f | %.2f | %.2f | 1.00 |\n", cc, n, w, r, a, b, k / 1024, c + d, r / x}'
while read -r K n w kb_sum _ cpu _; do
    awk -v K="$K" -v n="$n" -v w="$w" -v k="$kb_sum" -v c="$cpu" -v x="$wrk_rps" -v j="$jps" \
        'BEGIN {r = n / w; printf "| %d Laravel workers (sum over processes) | %d | %.2f | %.0f | - | - | %.1f | %.2f | %.2f | %.1f |\n", K, n, w, r, k / 1024, c, r / x, j / r}'
done < <(cat "$WORK/fleets" 2>/dev/null)
echo
awk -v r="$jps" -v w="$wrk_rps" 'BEGIN {printf "target: sluice >= 0.7 x wrk: %s (%.2f)\n", (r >= 0.7 * w ? "met" : "MISSED"), r / w}'
# The comparison is against the 64-process fleet, or the largest one run.
if [ -s "$WORK/fleets" ]; then
    read -r K n w kb_sum _ _ pss _ < <(sort -n "$WORK/fleets" | tail -1)
    awk -v K="$K" -v n="$n" -v w="$w" -v fk="$kb_sum" -v fp="$pss" -v j="$jps" -v k="$kb" 'BEGIN {
        f = n / w
        printf "target: sluice >= 10 x the %d-process fleet'"'"'s jobs/s: %s (%.1f)\n", K, (j >= 10 * f ? "met" : "MISSED"), j / f
        printf "target: sluice'"'"'s peak RSS <= 1/15 of the fleet'"'"'s summed peak RSS: %s (%.1f MB vs %.1f MB: 1/%.1f; vs its summed PSS peak %.1f MB: 1/%.1f)\n",
            (k * 15 <= fk ? "met" : "MISSED"), k / 1024, fk / 1024, fk / k, fp / 1024, fp / k }'
fi
ok=1
[ "$sluice_status" = 0 ] && [ "${succeeded:-0}" = "$N" ] && [ "$s_ready$s_reserved$s_delayed" = 000 ] ||
    { echo "sluice: exit $sluice_status, succeeded ${succeeded:-?} of $N, left $s_ready/$s_reserved/$s_delayed" >&2; ok=0; }
while read -r K n _ _ _ _ _ _ acc failed _ nz _ ready reserved delayed _; do
    [ "$n" = "$FLEET_JOBS" ] && [ "$failed$nz" = 00 ] && [ "$ready$reserved$delayed" = 000 ] ||
        { echo "fleet $K: $n of $FLEET_JOBS Processed, $failed failed, $nz non-zero exits, left $ready/$reserved/$delayed" >&2; ok=0; }
done < <(cat "$WORK/fleets" 2>/dev/null)
[ "$ok" = 1 ]
