#!/usr/bin/env bash
# Runs README.md's "Three daemons beside a clustered OVN central" as written, on three hosts made
# of network namespaces (vipd-ce-doc1..3, 10.0.0.1..3 on the bridge vipd-ce-docbr; a client
# namespace vipd-ce-docc, 10.0.0.100). Each host also has a private mount namespace whose /etc,
# /usr and /var are overlays of the machine's (writes land in this run's directory) and whose
# /run is empty, so the README's paths (/etc/ovn-vipd, /var/lib/ovn-vipd-db, ...) are the host's
# own and nothing of the machine is changed. systemd is not running in the hosts: where the
# README says `systemctl restart ovn-vipd`, the daemon is started the way the unit and its drop-in
# start it (the EnvironmentFile's variables, then ExecStart), and the unit with the drop-in is
# checked with `systemd-analyze verify`. The OVN NB cluster the README assumes is made here too.
# Run as root from the checkout after `cargo build --release --bin ovn-vipd --bin vipctl`
# (OVN_VIPD_BIN_DIR overrides target/release). Last line: "cluster-readme: passed" or a failure.
set -euo pipefail

checkout=$(cd "$(dirname "$0")/.." && pwd)
bin=${OVN_VIPD_BIN_DIR:-$checkout/target/release}
work=$(mktemp -d /tmp/vipd-ce-doc.XXXXXX)
H1=10.0.0.1 H2=10.0.0.2 H3=10.0.0.3
declare -A holder

log() { echo "cluster-readme: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

namespaces="vipd-ce-doc1 vipd-ce-doc2 vipd-ce-doc3 vipd-ce-docc"
remove_hosts() { # every process in the hosts' network namespaces, the namespaces, the bridge
  for ns in $namespaces; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for ns in $namespaces; do ip netns del "$ns" 2>/dev/null || true; done
  ip link del vipd-ce-docbr 2>/dev/null || true
}
cleanup() {
  remove_hosts
  if [ -n "${KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "run me as root"
[ -x "$bin/ovn-vipd" ] && [ -x "$bin/vipctl" ] || fail "build first: cargo build --release --bin ovn-vipd --bin vipctl"
# The machine-wide lock of the OVN tests (tests/common/ovn.rs): one whole OVN at a time.
exec 9>/tmp/ovn-vipd-e2e.lock
flock 9
remove_hosts # what a killed run left

# The wires.
ip link add vipd-ce-docbr type bridge
ip link set vipd-ce-docbr up
for n in 1 2 3 c; do
  ns=vipd-ce-doc$n
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "vipd-ce-doc$n" type veth peer name eth0 netns "$ns"
  ip link set "vipd-ce-doc$n" master vipd-ce-docbr up
  if [ "$n" = c ]; then addr=10.0.0.100; else addr=10.0.0.$n; fi
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# Each host's own files: overlays of /etc, /usr, /var and an empty /run, in a mount namespace
# held by a sleeping process.
for n in 1 2 3; do
  d=$work/h$n
  mkdir -p "$d"/{etc,usr,var}/{up,work}
  ip netns exec "vipd-ce-doc$n" unshare --mount --propagation private sh -c "
    for dir in etc usr var; do
      mount -t overlay overlay -o lowerdir=/\$dir,upperdir=$d/\$dir/up,workdir=$d/\$dir/work /\$dir
    done
    mount -t tmpfs tmpfs /run
    exec sleep infinity" &
  holder[$n]=$!
  disown
done
sleep 1
on() { # on HOST COMMANDS: runs COMMANDS with bash in host HOST, in the checkout, with H1..H3, ME.
  local n=$1
  shift
  nsenter -t "${holder[$n]}" -m -n -- env H1=$H1 H2=$H2 H3=$H3 ME=10.0.0.$n PATH=/usr/local/bin:$PATH \
    bash -euo pipefail -c "cd $checkout; $*"
}
for n in 1 2 3; do
  on "$n" 'test -d /run && ! test -e /run/netns' || fail "host $n has no private /run"
done

# Given: OVN central as a three-member NB cluster (as ovn-ctl --db-nb-cluster-local-addr makes it).
for n in 1 2 3; do
  if [ "$n" = 1 ]; then
    on 1 'mkdir -p /var/lib/ovn /run/ovn /var/log/ovn
      ovsdb-tool create-cluster /var/lib/ovn/ovnnb_db.db /usr/share/ovn/ovn-nb.ovsschema tcp:$ME:6643'
  else
    on "$n" 'mkdir -p /var/lib/ovn /run/ovn /var/log/ovn
      ovsdb-tool join-cluster /var/lib/ovn/ovnnb_db.db OVN_Northbound tcp:$ME:6643 tcp:$H1:6643'
  fi
  on "$n" 'ovsdb-server --detach --no-chdir --pidfile=/run/ovn/ovnnb_db.pid --unixctl=/run/ovn/ovnnb_db.ctl \
    --log-file=/var/log/ovn/ovsdb-server-nb.log --remote=punix:/run/ovn/ovnnb_db.sock \
    --remote=ptcp:6641:$ME /var/lib/ovn/ovnnb_db.db'
done

# Certificates (any CA will do; the README points at the CNI section for them): one server
# certificate per host naming its address, one client certificate.
c=$work/pki
mkdir -p "$c"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vipd-ce-doc-ca -keyout "$c/ca.key" -out "$c/ca.pem" 2>/dev/null
issue() { # issue NAME SAN
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$c/$1.key" -out "$c/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$2" >"$c/$1.ext"
  openssl x509 -req -in "$c/$1.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -CAcreateserial -days 2 \
    -extfile "$c/$1.ext" -out "$c/$1.pem" 2>/dev/null
}
for n in 1 2 3; do issue "host$n" "IP:10.0.0.$n"; done
issue client DNS:client

# The README's "Under systemd" install, on every host.
for n in 1 2 3; do
  on "$n" "mkdir -p /usr/local/bin && cp $bin/ovn-vipd $bin/vipctl /usr/local/bin/
    install -D -m 0644 deploy/ovn-vipd.toml /etc/ovn-vipd/ovn-vipd.toml
    install -D -m 0644 deploy/systemd/ovn-vipd.service /etc/systemd/system/ovn-vipd.service
    install -m 0600 $c/host$n.pem /etc/ovn-vipd/server.pem
    install -m 0600 $c/host$n.key /etc/ovn-vipd/server.key
    install -m 0644 $c/ca.pem /etc/ovn-vipd/clients-ca.pem"
done

log "README: the cluster database"
# --- README: the cluster database (every host; create-cluster on host 1, join-cluster on 2, 3) ---
for n in 1 2 3; do
  on "$n" 'install -D -m 0644 deploy/ovn-vipd.ovsschema /usr/share/ovn-vipd/ovn-vipd.ovsschema
    mkdir -p /var/lib/ovn-vipd-db /run/ovn-vipd-db /var/log/ovn-vipd-db'
  if [ "$n" = 1 ]; then
    on 1 'ovsdb-tool create-cluster /var/lib/ovn-vipd-db/ovn-vipd.db /usr/share/ovn-vipd/ovn-vipd.ovsschema tcp:$ME:6648'
  else
    on "$n" 'ovsdb-tool join-cluster /var/lib/ovn-vipd-db/ovn-vipd.db OVN_VIPD tcp:$ME:6648 tcp:$H1:6648'
  fi
  on "$n" 'ovsdb-server --detach --no-chdir --pidfile=/run/ovn-vipd-db/ovsdb-server.pid \
    --unixctl=/run/ovn-vipd-db/ovsdb-server.ctl --log-file=/var/log/ovn-vipd-db/ovsdb-server.log \
    --remote=punix:/run/ovn-vipd-db/ovn-vipd-db.sock --remote=ptcp:6647:$ME \
    /var/lib/ovn-vipd-db/ovn-vipd.db'
done
for n in 1 2 3; do
  for _ in $(seq 100); do
    on "$n" 'ovs-appctl -t /run/ovn-vipd-db/ovsdb-server.ctl cluster/status OVN_VIPD' 2>/dev/null |
      grep -q 'Status: cluster member' && break
    sleep 0.2
  done
  on "$n" 'ovs-appctl -t /run/ovn-vipd-db/ovsdb-server.ctl cluster/status OVN_VIPD' | grep -c 'Status: cluster member' >/dev/null ||
    fail "host $n did not join OVN_VIPD"
done
on 1 'ovs-appctl -t /run/ovn-vipd-db/ovsdb-server.ctl cluster/status OVN_VIPD' | sed -n '1,12p' >&2

log "README: the daemon's settings (drop-in and environment file)"
# --- README: the drop-in and this host's settings ---
for n in 1 2 3; do
  on "$n" 'install -D -m 0644 deploy/systemd/ovn-vipd.service.d/cluster.conf /etc/systemd/system/ovn-vipd.service.d/cluster.conf
cat >/etc/ovn-vipd/cluster.env <<EOF
OVN_VIPD_OVN_NB=tcp:$H1:6641,tcp:$H2:6641,tcp:$H3:6641
OVN_VIPD_CLUSTER_DB=tcp:$H1:6647,tcp:$H2:6647,tcp:$H3:6647
OVN_VIPD_LISTEN=unix:/run/ovn-vipd/ovn-vipd.sock,tcp:$ME:50051
OVN_VIPD_ADVERTISE_ADDRESS=tcp:$ME:50051
OVN_VIPD_TLS_CERTIFICATE=/etc/ovn-vipd/server.pem
OVN_VIPD_TLS_PRIVATE_KEY=/etc/ovn-vipd/server.key
OVN_VIPD_TLS_CLIENT_CA=/etc/ovn-vipd/clients-ca.pem
EOF'
  on "$n" 'systemd-analyze verify /etc/systemd/system/ovn-vipd.service' 2>&1 | grep -v '^$' >&2 || true
  on "$n" 'systemd-analyze verify /etc/systemd/system/ovn-vipd.service' >/dev/null 2>&1 ||
    fail "systemd-analyze verify refused the unit with its drop-in on host $n"
  # What `systemctl restart ovn-vipd` does with the unit and the drop-in: the unit's Environment=,
  # the EnvironmentFile's variables, ExecStart, with the unit's state and runtime directories.
  on "$n" 'mkdir -p /var/lib/ovn-vipd /run/ovn-vipd
    set -a; OVN_VIPD_DATA_DIR=/var/lib/ovn-vipd; . /etc/ovn-vipd/cluster.env; set +a
    ovn-vipd config --config /etc/ovn-vipd/ovn-vipd.toml | grep -E "^(cluster-db|advertise-address|listen) " >&2
    nohup /usr/local/bin/ovn-vipd --config /etc/ovn-vipd/ovn-vipd.toml >/var/log/ovn-vipd.log 2>&1 &
    echo $! >/run/ovn-vipd/ovn-vipd.pid'
done

# --- README: clients list the three daemons ---
client() {
  ip netns exec vipd-ce-docc "$bin/vipctl" --server tcp:$H1:50051,tcp:$H2:50051,tcp:$H3:50051 \
    --tls-ca-cert "$c/ca.pem" --tls-certificate "$c/client.pem" --tls-private-key "$c/client.key" "$@"
}
subnet_yaml='apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: ovn-default
spec:
  cidrBlock: 10.16.0.0/16
---
apiVersion: kubeovn.io/v1
kind: Vip
metadata:
  name: web
spec:
  subnet: ovn-default
  namespace: default'
for _ in $(seq 150); do
  echo "$subnet_yaml" | client apply -f - >/dev/null 2>&1 && break
  sleep 0.2
done
echo "$subnet_yaml" | client apply -f - >&2 || fail "vipctl apply through the list"
client get vip web >&2 || fail "vipctl get through the list"
active=
for n in 1 2 3; do
  on "$n" 'ovsdb-client transact unix:/run/ovn-vipd-db/ovn-vipd-db.sock "[\"OVN_VIPD\",{\"op\":\"select\",\"table\":\"Active\",\"where\":[]}]"' >"$work/active.json"
done
log "Active row: $(cat "$work/active.json")"
active=$(grep -o 'tcp:10\.0\.0\.[123]:50051' "$work/active.json" | head -1 | cut -d. -f4 | cut -d: -f1)
[ -n "$active" ] || fail "no Active row naming a daemon"
log "host $active is active; killing its daemon"
on "$active" 'kill -9 "$(cat /run/ovn-vipd/ovn-vipd.pid)"'
ok=
for _ in $(seq 100); do
  if printf 'apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata:\n  name: web2\nspec:\n  subnet: ovn-default\n  namespace: default\n' |
    client apply -f - >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || fail "no daemon took over"
client get vip web2 >&2 || fail "web2 after the takeover"
log passed
