# Sourced by the benchmark scripts: start and stop a 3-node `shoal dev` cluster.
#
#   dev_cluster_up DIR BASE_PORT METRICS_BASE_PORT LOG [EXTRA_TOML]
#       initialises DIR, appends EXTRA_TOML to every node's node.toml, starts the nodes
#       (pid in DEV_CLUSTER_PID), exports SHOAL_CONFIG, and waits until `shoal status`
#       answers (at most 20 s).
#   dev_cluster_down
#       stops the nodes started by dev_cluster_up (safe to call twice; scripts call it
#       from their EXIT trap).
#   cpu_of PID...
#       the CPU seconds (user + system) the processes have used so far.
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
    "$BIN/shoal" dev up --dir "$dir" >"$log" 2>&1 &
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
