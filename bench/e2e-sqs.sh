#!/usr/bin/env bash
# SQS end to end: N Laravel jobs on the emulator's SQS, each naming an
# object in its S3, through `sluice run` (extract -> S3 fetch -> template ->
# HTTP POST to `sluice receiver` at 20 ms -> batched delete), beside what a
# plain SDK loop (receive 10, delete the batch, same pollers, no work)
# drains from the same emulator in the same run. The emulator (moto) is the
# bottleneck, so the figure is the ratio; target >= 0.9. Also prints SQS
# requests per message (receive + delete + visibility calls / messages);
# target <= 0.25. N defaults to 1000: moto's operations are O(queue).
# The objects are served by s3s-fs (a real S3 protocol server over a
# directory, `cargo install`ed once into ~/.cache/sluice/s3s), so the
# emulator serves SQS alone on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N="${N:-1000}"
POLLERS="${POLLERS:-4}"
CONCURRENCY="${CONCURRENCY:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
ENDPOINT="http://127.0.0.1:${SLUICE_MOTO_PORT:-5055}"

scripts/services >/dev/null
S3S="$HOME/.cache/sluice/s3s/bin/s3s-fs"
if [ ! -x "$S3S" ]; then
    echo "bench/e2e-sqs.sh: installing s3s-fs 0.14.1 into ~/.cache/sluice/s3s (once, ~2 min)" >&2
    cargo install --quiet s3s-fs@0.14.1 --locked --features binary --root "$HOME/.cache/sluice/s3s"
fi
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo -dirty)"
cargo build --quiet --locked --release -p sluice --bin sluice --example sqs-baseline
SLUICE="$CARGO_TARGET_DIR/release/sluice"
BASELINE="$CARGO_TARGET_DIR/release/examples/sqs-baseline"

WORK="$(mktemp -d)"
RECEIVER_PID=""
S3S_PID=""
cleanup() {
    for pid in $RECEIVER_PID $S3S_PID; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Fresh, uniquely named queues and bucket for each side: moto slows as a
# queue grows, so both start from the same N.
tag="bench-$(date +%s)-$$"
base_queue="$(scripts/seed-laravel-sqs "$N" "$tag-base" - 2>/dev/null)"
queue="$(scripts/seed-laravel-sqs "$N" "$tag" - 2>/dev/null)"
mkdir -p "$WORK/s3/$tag"
for i in $(seq 0 $((N - 1))); do
    printf '{"report": %d, "rows": [{"sku": "sku-%d", "qty": %d}]}' "$i" $((i % 97)) $((i % 13)) >"$WORK/s3/$tag/report-$i.json"
done
S3_PORT="$(free_port)"
"$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key test --secret-key test "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
S3S_PID=$!
wait_port "$S3_PORT" "$S3S_PID"

"$BASELINE" "$ENDPOINT" "$base_queue" "$POLLERS" | tee "$WORK/baseline.out"

PORT="$(free_port)"
"$SLUICE" receiver --listen "127.0.0.1:$PORT" --latency-ms 20 >"$WORK/receiver.log" 2>&1 &
RECEIVER_PID=$!
wait_port "$PORT" "$RECEIVER_PID"

# The committed example, pointed at this run's queue, bucket and receiver.
sed -e "s/^concurrency = 700/concurrency = $CONCURRENCY/" \
    -e 's/^rate = .*//' \
    examples/laravel-sqs-s3.toml >"$WORK/bench.toml"
status=0
SQS_POLLERS="$POLLERS" S3_ENDPOINT="http://127.0.0.1:$S3_PORT" SQS_WAIT_SECS=1 SQS_QUEUE_URL="$queue" SQS_DLQ_URL="$queue-dlq" REPORTS_BUCKET="$tag" INGEST_URL="http://127.0.0.1:$PORT" \
    NO_COLOR=1 /usr/bin/time -f '%M %U %S %e' -o "$WORK/sluice.time" \
    "$SLUICE" run -c "$WORK/bench.toml" --progress off --stop-when-empty 2>"$WORK/sluice.err" || status=$?
kill -INT "$RECEIVER_PID"; wait "$RECEIVER_PID" || true; RECEIVER_PID=""
echo "== sluice run (exit $status)"; grep -v "^\s*$" "$WORK/sluice.err" | grep -v " job failed\| dead-lettered" | tail -8
echo "== receiver"; cat "$WORK/receiver.log"

base_rate="$(grep -o '([0-9.]* msgs/s)' "$WORK/baseline.out" | tr -d '(' | cut -d' ' -f1)"
base_rpm="$(grep -o '[0-9.]* per message' "$WORK/baseline.out" | cut -d' ' -f1)"
succeeded="$(grep -o 'succeeded [0-9]*' "$WORK/sluice.err" | cut -d' ' -f2)"
read -r kb u s wall < <(tail -1 "$WORK/sluice.time")
field() { grep -o " $1=[0-9]*" "$WORK/sluice.err" | tail -1 | cut -d= -f2; }
receive="$(field receive)"; empty="$(field empty_receive)"; delete="$(field delete)"; vis="$(field visibility)"

echo
echo "command: N=$N POLLERS=$POLLERS CONCURRENCY=$CONCURRENCY bench/e2e-sqs.sh"
echo "date: $(date -u '+%F %T UTC'), nproc: $(nproc), git: $rev, emulator: moto $("$HOME/.cache/sluice/moto-venv/bin/python" -c 'import moto; print(moto.__version__)')"
echo
echo "| run | messages | wall s | msgs/s | vs baseline | SQS requests/msg | peak RSS MB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -v r="$base_rate" -v n="$N" -v q="$base_rpm" 'BEGIN {printf "| SDK loop (receive 10 + delete batch, no work) | %d | %.2f | %.1f | 1.00 | %.3f | - |\n", n, n / r, r, q}'
awk -v n="$N" -v w="$wall" -v b="$base_rate" -v a="$receive" -v d="$delete" -v v="$vis" -v k="$kb" \
    'BEGIN {r = n / w; printf "| sluice run (S3 GET + HTTP 20 ms per job) | %d | %.2f | %.1f | %.2f | %.3f | %.1f |\n", n, w, r, r / b, (a + d + v) / n, k / 1024}'
echo
echo "sluice SQS requests: receive $receive (empty $empty), delete $delete, visibility $vis;" \
    "duplicate deliveries: $((succeeded - N)) (moto's ReceiveMessage is not atomic across pollers)"
awk -v n="$N" -v w="$wall" -v b="$base_rate" -v a="$receive" -v d="$delete" -v v="$vis" 'BEGIN {
    r = n / w; q = (a + d + v) / n
    printf "targets: rate >= 0.9 x the SDK loop: %s (%.2f); requests/msg <= 0.25: %s (%.3f)\n",
        (r >= 0.9 * b ? "met" : "MISSED"), r / b, (q <= 0.25 ? "met" : "MISSED"), q }'
[ "$status" = 0 ] && [ "${succeeded:-0}" -ge "$N" ] || { echo "sluice: exit $status, succeeded ${succeeded:-?} of $N" >&2; exit 1; }
