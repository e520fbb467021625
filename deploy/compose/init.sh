#!/bin/sh
# One-shot setup of the compose cluster (the `init` service of docker-compose.yml): a
# cluster CA, a certificate and node.toml per node, and a client certificate and
# client.toml, in $OUT. Does nothing if $OUT already holds a CA, so restarts keep the
# cluster's identity. Node i is n<i> at $SUBNET.1<i> (the static addresses the compose
# file gives the nodes): node configs take socket addresses, not host names.
#
# Environment: SHOAL (the binary, default `shoal`), OUT (default /config), NODES
# (default 3), SUBNET (default 172.28.0), OWNER (uid:gid to own the files, default
# 10001:10001, the image's `shoal` user; empty: leave as is).
# tests/tests/process/deploy.rs runs it and loads every file it writes.
set -eu
SHOAL=${SHOAL:-shoal}
OUT=${OUT:-/config}
NODES=${NODES:-3}
SUBNET=${SUBNET:-172.28.0}
OWNER=${OWNER-10001:10001}
QUIC_PORT=7001
METRICS_PORT=9101

if [ -f "$OUT/ca/ca.pem" ]; then
  echo "init: $OUT already holds a cluster; nothing to do"
  exit 0
fi
mkdir -p "$OUT"
"$SHOAL" cert ca --out "$OUT/ca"

seeds=""
i=1
while [ "$i" -le "$NODES" ]; do
  seeds="$seeds
[[seeds]]
id = \"n$i\"
addr = \"$SUBNET.1$i:$QUIC_PORT\"
"
  i=$((i + 1))
done

# Quorums for the cluster size: N = min(3, nodes), R = W = a majority of N.
n=$(( NODES < 3 ? NODES : 3 ))
q=$(( n / 2 + 1 ))

i=1
while [ "$i" -le "$NODES" ]; do
  dir="$OUT/n$i"
  "$SHOAL" cert node --ca "$OUT/ca" --id "n$i" --out "$dir"
  cat > "$dir/node.toml" <<TOML
# Node n$i of the compose cluster (written by deploy/compose/init.sh).
id = "n$i"
listen = "0.0.0.0:$QUIC_PORT"
data_dir = "/var/lib/shoal/data"
metrics_listen = "0.0.0.0:$METRICS_PORT"
log_format = "json"
partitions = 64
$seeds
[tls]
ca = "../ca/ca.pem"
cert = "node.pem"
key = "node.key"

[replication]
n = $n
r = $q
w = $q
TOML
  i=$((i + 1))
done

"$SHOAL" cert client --ca "$OUT/ca" --name compose --out "$OUT/client"
addrs=""
i=1
while [ "$i" -le "$NODES" ]; do
  addrs="$addrs${addrs:+, }\"$SUBNET.1$i:$QUIC_PORT\""
  i=$((i + 1))
done
cat > "$OUT/client.toml" <<TOML
# Client config of the compose cluster (written by deploy/compose/init.sh).
seeds = [$addrs]

[tls]
ca = "ca/ca.pem"
cert = "client/client.pem"
key = "client/client.key"
TOML

if [ -n "$OWNER" ]; then
  chown -R "$OWNER" "$OUT"
fi
echo "init: wrote a $NODES-node cluster (N=$n R=$q W=$q) to $OUT"
