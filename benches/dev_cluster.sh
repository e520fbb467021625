# Sourced by the benchmark scripts: start and stop a 3-node `shoal dev` cluster.
#
#   dev_cluster_up DIR BASE_PORT METRICS_BASE_PORT LOG [EXTRA_TOML]
#       initialises DIR, appends EXTRA_TOML to every node's node.toml, starts the nodes
#       (pid in DEV_CLUSTER_PID) with the NAME=VALUE words of NODE_ENV (if set) in
#       their environment, exports SHOAL_CONFIG, and waits until `shoal status`
#       answers (at most 20 s).
#   dev_cluster_down
#       stops the nodes started by dev_cluster_up (safe to call twice; scripts call it
#       from their EXIT trap).
#   cpu_of PID...
#       the CPU seconds (user + system) the processes have used so far.
#   measure_run KEY LABEL RUN BENCH PORT METRICS_PORT PREFIX [EXTRA_TOML]
#       one measured run on a fresh cluster (see the function).
#
# Needs BIN (the directory of the release `shoal` binary).

DEV_CLUSTER_PID=""

dev_cluster_up() {
    local dir=$1 port=$2 metrics=$3 log=$4 extra=${5:-} toml
    "$BIN/shoal" dev init --dir "$dir" --nodes 3 --base-port "$port" \
        --metrics-base-port "$metrics" >/dev/null
    if [ -n "$extra" ]; then
        for toml in "$dir"/n*/node.toml; do
            printf '\n%s\n' "$extra" >>"$toml"
        done
    fi
    # shellcheck disable=SC2086 # NODE_ENV is a list of NAME=VALUE words
    env ${NODE_ENV:-} "$BIN/shoal" dev up --dir "$dir" >"$log" 2>&1 &
    DEV_CLUSTER_PID=$!
    export SHOAL_CONFIG="$dir/client.toml"
    for _ in $(seq 1 100); do
        "$BIN/shoal" status >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "the dev cluster in $dir did not answer within 20 s (log: $log)" >&2
    return 1
}

dev_cluster_down() {
    if [ -n "$DEV_CLUSTER_PID" ]; then
        kill -INT "$DEV_CLUSTER_PID" 2>/dev/null || true
        wait "$DEV_CLUSTER_PID" 2>/dev/null || true
        DEV_CLUSTER_PID=""
    fi
}

# CPU seconds (user + system) used so far by the processes in "$@".
cpu_of() {
    local total=0 pid ticks
    for pid in "$@"; do
        ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + ticks))
    done
    echo "$total $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}

# measure_run KEY LABEL RUN BENCH PORT METRICS_PORT PREFIX [EXTRA_TOML]
#   One measured run on a fresh cluster: starts a 3-node cluster in a new temporary
#   directory (ports from PORT and METRICS_PORT, EXTRA_TOML appended to every node's
#   config), inserts 100,000 keys of 1 KiB with the shoal-bench BENCH (not measured),
#   runs WORKLOAD (default a) at CONCURRENCY (64) for DURATION (20s) after 3 s of
#   warm-up, stops the cluster and prints one line: KEY=LABEL run=RUN ops/s, p50/p99 of
#   the slower operation kind, the nodes' CPU microseconds per operation (from /proc)
#   and errors. Files: PREFIX.cluster.log, PREFIX.load.json, PREFIX.json, PREFIX.txt.
measure_run() {
    local key=$1 label=$2 i=$3 bench=$4 port=$5 metrics=$6 prefix=$7 extra=${8:-}
    local dir nodes before after
    dir="$(mktemp -d)/cluster"
    dev_cluster_up "$dir" "$port" "$metrics" "$prefix.cluster.log" "$extra"
    "$bench" --keys 100000 --value-size 1024 --no-progress --workload c --load \
        --concurrency 64 --ops 1000 --json "$prefix.load.json" >/dev/null
    nodes=$(pgrep -f "$dir/n[0-9]*/node.toml" | tr '\n' ' ')
    before=$(cpu_of $nodes)
    "$bench" --keys 100000 --value-size 1024 --no-progress --workload "${WORKLOAD:-a}" \
        --concurrency "${CONCURRENCY:-64}" --duration "${DURATION:-20s}" --warmup 3s \
        --json "$prefix.json" >"$prefix.txt"
    after=$(cpu_of $nodes)
    dev_cluster_down
    rm -rf "$(dirname "$dir")"
    python3 - "$prefix.json" "$key" "$label" "$i" "$before" "$after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ops = r["ops_total"] + r["warmup_ops"]
cpu_us = (float(sys.argv[6]) - float(sys.argv[5])) * 1e6 / max(ops, 1)
p = lambda q: max(o[q] for o in r["ops"].values())
print(f"{sys.argv[2]}={sys.argv[3]} run={sys.argv[4]} ops/s={r['throughput']:.0f} "
      f"p50_us={p('p50_us')} p99_us={p('p99_us')} node_cpu_us_per_op={cpu_us:.0f} "
      f"errors={r['errors_total']}", flush=True)
PY
}
