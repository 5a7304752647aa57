#!/usr/bin/env bash
# sluice-pool against the usual alternatives, side by side, in one run:
#   rust: pool (sluice-pool), semaphore (tokio::spawn + Semaphore),
#         buffer_unordered (futures StreamExt)
#   go:   chan_semaphore (buffered channel as semaphore), workers (fixed
#         goroutines reading a channel); stdlib only, Debian's golang-go
# Workloads: (a) 1M tasks x 10 ms sleep at concurrency 50,000
#            (b) 1M no-op tasks at concurrency 1,000
# Prints one JSON line per run, then a table with the ratios BENCHMARKS.md
# records. TASKS=200000 bench/pool.sh for a quicker look.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-1000000}"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CACHE/bench"

if ! command -v go >/dev/null; then
    echo "bench/pool.sh: installing Debian's golang-go for the Go baselines" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go >/dev/null
fi
GO_BIN="$CACHE/bench/go-pool-bench"
(cd bench/baselines/go && GOFLAGS=-mod=mod go build -o "$GO_BIN" .)
cargo build --quiet --locked --release -p sluice-pool --example pool-bench
RUST_BIN="$CARGO_TARGET_DIR/release/examples/pool-bench"

OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
run() { "$@" | tee -a "$OUT"; }
for workload in "50000 10" "1000 0"; do
    set -- $workload
    for mode in pool semaphore buffer_unordered; do
        run "$RUST_BIN" --mode "$mode" --tasks "$TASKS" --concurrency "$1" --sleep-ms "$2"
    done
    for mode in chan_semaphore workers; do
        run "$GO_BIN" --mode "$mode" --tasks "$TASKS" --concurrency "$1" --sleep-ms "$2"
    done
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def table(conc, sleep, title):
    rs = [r for r in rows if r["concurrency"] == conc and r["sleep_ms"] == sleep]
    if not rs:
        return
    go = {r["mode"]: r for r in rs if r["impl"] == "go"}
    fastest_go = min(r["wall_ms"] for r in go.values())
    workers = go["workers"]
    ideal = rs[0]["tasks"] / conc * sleep
    print(f"\n{title}")
    print(f"{'impl':5} {'mode':17} {'wall ms':>9} {'tasks/s':>11} {'peak RSS MB':>11} {'cpu s':>6}"
          f" {'wall/fastest Go':>15} {'RSS/Go workers':>14} {'tput/Go workers':>15}"
          + (f" {'wall/ideal':>10}" if ideal else ""))
    for r in rs:
        line = (f"{r['impl']:5} {r['mode']:17} {r['wall_ms']:>9.1f} {r['tasks_per_sec']:>11.0f}"
                f" {r['peak_rss_mb']:>11.1f} {r['cpu_s']:>6.2f}"
                f" {r['wall_ms']/fastest_go:>15.2f} {r['peak_rss_mb']/workers['peak_rss_mb']:>14.2f}"
                f" {r['tasks_per_sec']/workers['tasks_per_sec']:>15.2f}")
        if ideal:
            line += f" {r['wall_ms']/ideal:>10.2f}"
        print(line)
    if ideal:
        print(f"ideal wall (tasks / concurrency x sleep) = {ideal:.0f} ms")
table(50000, 10, "(a) tasks x 10 ms sleep, concurrency 50,000")
table(1000, 0, "(b) no-op tasks, concurrency 1,000")
PY
