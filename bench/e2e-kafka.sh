#!/usr/bin/env bash
# Kafka end to end: N events on a fresh topic of the local broker (tansu,
# started by scripts/kafka) through `sluice run` (Kafka source -> HTTP POST
# to `sluice receiver` at 20 ms -> commit below what is settled), once with
# ordering "none" and once with "key" (KEYS distinct keys), each as its own
# consumer group reading the same topic, beside the ceiling wrk reaches on
# the same receiver in the same run. Targets: ordering none >= 0.6 x wrk,
# peak RSS <= 150 MB.
#
# Throughput is timed on the broker: from the group's first commit to the
# moment its committed offsets cover all N (commits every 100 ms here), so
# joining the group is not counted. Latency is sluice's own per-job figure
# (the HTTP attempt, as in e2e-file.sh): the events are all produced before
# sluice starts, so produce-to-arrival time would measure the backlog, not
# sluice. Receiver, wrk, the broker and sluice share the machine's cores.
# N=20000 bench/e2e-kafka.sh for a quicker look. QUEUED_KB sets librdkafka's
# queued.max.messages.kbytes (the source's prefetch) instead of the default.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N="${N:-200000}"
PARTITIONS="${PARTITIONS:-6}"
KEYS="${KEYS:-1000}"
CONCURRENCY="${CONCURRENCY:-1000}"
LATENCY_MS="${LATENCY_MS:-20}"
WRK_SECS="${WRK_SECS:-10}"
ORDERINGS="${ORDERINGS:-none key}"
QUEUED_KB="${QUEUED_KB:-}"
# tansu keeps every message in memory; above this it is restarted first.
TANSU_MAX_RSS_MB="${TANSU_MAX_RSS_MB:-1024}"
BROKERS="127.0.0.1:${SLUICE_KAFKA_PORT:-9092}"
TANSU_PIDFILE="${SLUICE_CACHE:-$HOME/.cache/sluice}/tansu-${SLUICE_KAFKA_PORT:-9092}.pid"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
mkdir -p "$CARGO_TARGET_DIR"

if ! command -v wrk >/dev/null; then
    echo "bench/e2e-kafka.sh: installing Debian's wrk for the ceiling" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo -dirty)"
cargo build --quiet --locked --release -p sluice --features kafka --bin sluice --example kafka-events
SLUICE="$CARGO_TARGET_DIR/release/sluice"
KAFKA_EVENTS="$CARGO_TARGET_DIR/release/examples/kafka-events"

scripts/kafka >/dev/null
TICKS="$(getconf CLK_TCK)"
PAGE="$(getconf PAGESIZE)"
tansu_pid() { cat "$TANSU_PIDFILE" 2>/dev/null || true; }
# "RSS_MB CPU_S" of a pid, or "- -" when it is not ours to read.
usage() {
    local pid="$1"
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
        awk -v t="$TICKS" -v p="$PAGE" '{printf "%.1f %.2f\n", $24 * p / 1048576, ($14 + $15) / t}' "/proc/$pid/stat"
    else
        echo "- -"
    fi
}
read -r tansu_mb _ < <(usage "$(tansu_pid)")
if [ "$tansu_mb" != - ] && awk -v m="$tansu_mb" -v x="$TANSU_MAX_RSS_MB" 'BEGIN {exit !(m > x)}'; then
    echo "bench/e2e-kafka.sh: tansu holds $tansu_mb MB (every message in memory); restarting it" >&2
    scripts/kafka stop >/dev/null
    scripts/kafka >/dev/null
fi
TANSU_PID="$(tansu_pid)"

WORK="$(mktemp -d)"
RECEIVER_PID=""
SLUICE_PID=""
TIME_PID=""
cleanup() {
    for pid in $SLUICE_PID $TIME_PID $RECEIVER_PID; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(free_port)"
"$SLUICE" receiver --listen "127.0.0.1:$PORT" --latency-ms "$LATENCY_MS" >"$WORK/receiver.log" 2>&1 &
RECEIVER_PID=$!
wait_port "$PORT" "$RECEIVER_PID" || { cat "$WORK/receiver.log" >&2; exit 1; }

# The ceiling: a static POST of the same size as the step's.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/events/123456"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"invoice": 123456, "customer": "customer-456", "amount_cents": 1234}'
LUA
/usr/bin/time -f '%M %U %S' -o "$WORK/wrk.time" \
    wrk -t 2 -c "$CONCURRENCY" -d "${WRK_SECS}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:$PORT/" >"$WORK/wrk.out"

topic="bench-$(date +%s)-$$"
read -r tansu_mb0 _ < <(usage "$TANSU_PID")
"$KAFKA_EVENTS" --brokers "$BROKERS" produce --topic "$topic" --partitions "$PARTITIONS" \
    --count "$N" --keys "$KEYS" --dead-letter-topic "$topic-dlq" | tee "$WORK/produce.out"
read -r tansu_mb1 _ < <(usage "$TANSU_PID")

# One run: a group of its own over the same topic. Writes $WORK/$1.*.
run() {
    local ordering="$1" group="$topic-$ordering" options=""
    if [ -n "$QUEUED_KB" ]; then
        options="$(printf '[pipeline.source.options]\n"queued.max.messages.kbytes" = "%s"' "$QUEUED_KB")"
    fi
    cat >"$WORK/$ordering.toml" <<TOML
[[pipeline]]
name = "bench-$ordering"
concurrency = $CONCURRENCY
[pipeline.source]
type = "kafka"
brokers = "$BROKERS"
topics = ["$topic"]
group_id = "$group"
ordering = "$ordering"
dead_letter_topic = "$topic-dlq"
commit_interval_ms = 100
$options
[[pipeline.step]]
type = "http"
url = "http://127.0.0.1:$PORT/events/{{ body.data.invoice }}"
body = '{"invoice": {{ body.data.invoice }}, "customer": {{ body.data.customer | tojson }}, "amount_cents": {{ body.data.amount_cents }}}'
TOML
    local t0 status=0 tansu_cpu0 tansu_cpu1
    read -r _ tansu_cpu0 < <(usage "$TANSU_PID")
    t0="$(date +%s.%N)"
    NO_COLOR=1 /usr/bin/time -f '%M %U %S' -o "$WORK/$ordering.time" \
        "$SLUICE" run -c "$WORK/$ordering.toml" --progress off 2>"$WORK/$ordering.err" &
    TIME_PID=$!
    for _ in $(seq 50); do
        SLUICE_PID="$(pgrep -P "$TIME_PID" || true)"
        [ -n "$SLUICE_PID" ] && break
        sleep 0.1
    done
    [ -n "$SLUICE_PID" ] || { echo "sluice did not start:" >&2; cat "$WORK/$ordering.err" >&2; exit 1; }
    "$KAFKA_EVENTS" --brokers "$BROKERS" wait-committed --topic "$topic" --group "$group" \
        --count "$N" --timeout-secs 900 >"$WORK/$ordering.wait" \
        || { cat "$WORK/$ordering.wait" "$WORK/$ordering.err" >&2; exit 1; }
    awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.2f\n", t1 - t0}' >"$WORK/$ordering.wall"
    read -r _ tansu_cpu1 < <(usage "$TANSU_PID")
    awk -v a="$tansu_cpu0" -v b="$tansu_cpu1" 'BEGIN {print (a == "-" ? "-" : sprintf("%.2f", b - a))}' >"$WORK/$ordering.tansu_cpu"
    kill -TERM "$SLUICE_PID"
    wait "$TIME_PID" || status=$?
    SLUICE_PID=""; TIME_PID=""
    echo "$status" >"$WORK/$ordering.status"
    echo "== sluice run, ordering $ordering (exit $status)"
    cat "$WORK/$ordering.wait" "$WORK/$ordering.err"
}
for ordering in $ORDERINGS; do run "$ordering"; done
kill -INT "$RECEIVER_PID"; wait "$RECEIVER_PID" || true; RECEIVER_PID=""
read -r tansu_mb2 _ < <(usage "$TANSU_PID")

echo "== wrk"; cat "$WORK/wrk.out"
echo "== receiver"; cat "$WORK/receiver.log"

wrk_rps="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")"
wrk_p50="$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out")"
wrk_p99="$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")"
read -r wrk_kb wrk_u wrk_s < <(tail -1 "$WORK/wrk.time")

echo
echo "command: N=$N PARTITIONS=$PARTITIONS KEYS=$KEYS CONCURRENCY=$CONCURRENCY LATENCY_MS=$LATENCY_MS WRK_SECS=$WRK_SECS ORDERINGS=\"$ORDERINGS\"${QUEUED_KB:+ QUEUED_KB=$QUEUED_KB} bench/e2e-kafka.sh"
echo "date: $(date -u '+%F %T UTC'), nproc: $(nproc), git: $rev, broker: $("$HOME/.cache/sluice/tansu/bin/tansu" --version 2>/dev/null || echo "not tansu") on $BROKERS"
head -1 "$WORK/produce.out"
echo "tansu RSS: $tansu_mb0 MB before producing, $tansu_mb1 MB after, $tansu_mb2 MB at the end"
echo
echo "| run | events/s | p50 | p99 | peak RSS MB | CPU s | broker CPU s | vs wrk |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
awk -v r="$wrk_rps" -v a="$wrk_p50" -v b="$wrk_p99" -v k="$wrk_kb" -v c="$wrk_u" -v d="$wrk_s" -v n="$CONCURRENCY" \
    'BEGIN {printf "| wrk ceiling (-t 2 -c %d, req/s) | %.0f | %s | %s | %.1f | %.2f | - | 1.00 |\n", n, r, a, b, k / 1024, c + d}'
failed=0
for ordering in $ORDERINGS; do
    rate="$(grep -o '[0-9]* events/s' "$WORK/$ordering.wait" | cut -d' ' -f1)"
    p50="$(grep -o 'p50 [^,]*' "$WORK/$ordering.err" | cut -d' ' -f2-)"
    p99="$(grep -o 'p99 [^,]*' "$WORK/$ordering.err" | cut -d' ' -f2-)"
    succeeded="$(grep -o 'succeeded [0-9]*' "$WORK/$ordering.err" | cut -d' ' -f2)"
    read -r kb u s < <(tail -1 "$WORK/$ordering.time")
    label="ordering $ordering"
    [ "$ordering" = key ] && label="ordering key ($KEYS keys)"
    awk -v l="$label" -v r="$rate" -v a="$p50" -v b="$p99" -v k="$kb" -v c="$u" -v d="$s" -v w="$wrk_rps" \
        -v t="$(cat "$WORK/$ordering.tansu_cpu")" -v n="$N" -v p="$PARTITIONS" \
        'BEGIN {printf "| sluice run, %s (%d events, %d partitions) | %.0f | %s | %s | %.1f | %.2f | %s | %.2f |\n", l, n, p, r, a, b, k / 1024, c + d, t, r / w}'
    echo "$ordering $rate $kb $(cat "$WORK/$ordering.status") ${succeeded:-0} $(cat "$WORK/$ordering.wall")" >>"$WORK/results"
done
echo
while read -r ordering rate kb status succeeded wall; do
    awk -v o="$ordering" -v r="$rate" -v w="$wrk_rps" -v k="$kb" -v s="$wall" -v n="$N" -v c="$succeeded" 'BEGIN {
        printf "ordering %s: %s s from start to all committed; duplicates %d; ", o, s, c - n
        if (o == "none") printf "throughput >= 0.6 x wrk: %s (%.2f); ", (r >= 0.6 * w ? "met" : "MISSED"), r / w
        printf "peak RSS <= 150 MB: %s (%.1f MB)\n", (k / 1024 <= 150 ? "met" : "MISSED"), k / 1024 }'
    if [ "$status" != 0 ] || [ "$succeeded" -lt "$N" ]; then
        echo "sluice, ordering $ordering: exit $status, succeeded $succeeded of $N" >&2
        failed=1
    fi
done <"$WORK/results"
exit "$failed"
