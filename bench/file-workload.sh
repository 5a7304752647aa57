# shellcheck shell=bash
# The workload of bench/e2e-file.sh, shared with bench/ab-e2e-file.sh so an
# A/B runs exactly what the e2e bench runs (source it; not run alone).

# file_workload DIR JOBS PORT CONCURRENCY: writes DIR/jobs.ndjson (JOBS
# lines) and DIR/bench.toml: a file source over it, checkpoint on (the
# default users run), one http step POSTing a templated URL and JSON body to
# 127.0.0.1:PORT.
file_workload() {
    local dir="$1" jobs="$2" port="$3" concurrency="$4"
    seq 0 $((jobs - 1)) | awk '{printf "{\"id\": %d, \"user\": \"user-%d@example.com\"}\n", $1, $1}' >"$dir/jobs.ndjson"
    cat >"$dir/bench.toml" <<TOML
[[pipeline]]
name = "bench"
concurrency = $concurrency
[pipeline.source]
type = "file"
path = '$dir/jobs.ndjson'
format = "json"
[[pipeline.step]]
type = "http"
url = "http://127.0.0.1:$port/jobs/{{ body.id }}"
body = '{"id": {{ body.id }}, "user": {{ body.user | tojson }}}'
TOML
}

# Removes what a run over DIR/jobs.ndjson leaves beside it; a stale
# checkpoint would make the next run resume instead of starting over.
file_workload_reset() {
    rm -f "$1"/jobs.ndjson.{checkpoint,failures,failures.reasons}
}
