#!/usr/bin/env bash
# deploy/systemd/ovn-vipd.service under a real systemd, beside Debian's ovn-central units: a
# Debian 12 root (OVN_VIPD_CHECK_ROOT, prepared by scripts/fresh-root: the suite ran in it, so it
# holds ovn-central, the checkout at /root/ovn-vipd and its release build; systemd-sysv, dbus and
# sudo) boots systemd as PID 1 in systemd-nspawn with a private network. README's "Under systemd"
# lines run in it as written, then each check below is one test; the last line is
# "N passed, N failed". Run as root on the host; scripts/fresh-root (.ci/run) calls it.
set -uo pipefail

root=${OVN_VIPD_CHECK_ROOT:?the root to boot}
host_rustup=${RUSTUP_HOME:-$HOME/.rustup}
host_cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
work=$(mktemp -d /tmp/ovn-vipd-systemd.XXXXXX)
nspawn_pid= leader=
passed=0 failed=0

log() { echo "systemd-unit: $*" >&2; }

boot() {
  setsid systemd-nspawn --register=no --keep-unit --private-network --quiet -D "$root" \
    --bind-ro="$host_rustup:/root/.rustup" --bind-ro="$host_cargo_bin:/root/.cargo/bin" \
    --machine=ovn-vipd-fresh -b </dev/null >>"$work/nspawn.log" 2>&1 &
  nspawn_pid=$!
  leader=
  for _ in $(seq 300); do
    leader=$(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{ print $1 }')
    # PID 1's private socket: systemctl can talk to it.
    [ -n "$leader" ] && in_container test -S /run/systemd/private 2>/dev/null && break
    sleep 0.1
  done
  in_container test -S /run/systemd/private 2>/dev/null ||
    { log "the container did not start:"; cat "$work/nspawn.log" >&2; return 1; }
  # running, or degraded (units of a minimal root that cannot work in a container).
  timeout 180 nsenter -t "$leader" -a systemctl is-system-running --wait >/dev/null 2>&1
  local state
  state=$(in_container systemctl is-system-running)
  case $state in
    running | degraded) log "booted ($state)" ;;
    *)
      log "the container did not finish booting: $state"
      in_container systemctl --failed --no-pager >&2
      return 1
      ;;
  esac
}

halt() {
  [ -n "$nspawn_pid" ] || return 0
  # SIGTERM makes systemd-nspawn ask the container's systemd to power off.
  kill "$nspawn_pid" 2>/dev/null
  for _ in $(seq 600); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$nspawn_pid" 2>/dev/null
  wait "$nspawn_pid" 2>/dev/null
  nspawn_pid= leader=
}

cleanup() {
  halt
  rm -rf "$work"
}
trap cleanup EXIT

# Runs a command in the container (all its namespaces), with a login's environment.
in_container() {
  nsenter -t "$leader" -a /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
show() { in_container systemctl show -p "$1" --value "${2:-ovn-vipd}"; }
# The daemon's journal lines (messages only) of its current invocation.
journal_now() { in_container journalctl -q -o cat _SYSTEMD_INVOCATION_ID="$(show InvocationID)"; }

# Ends the check (each runs in a subshell of its own) with a message.
fail() {
  echo "    $*" >&2
  exit 1
}
# Waits up to $1 seconds for the command to succeed.
wait_for() {
  local seconds=$1
  shift
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
is_active() { [ "$(show ActiveState "${1:-ovn-vipd}")" = active ]; }
journal_has() { journal_now | grep -cF "$1" >/dev/null; }

run_test() {
  local name=$1 status=0
  ("$name") || status=$?
  if [ "$status" -eq 0 ]; then
    echo "test systemd::$name ... ok"
    passed=$((passed + 1))
  else
    echo "test systemd::$name ... FAILED"
    failed=$((failed + 1))
    log "journal of ovn-vipd:"
    in_container journalctl -q -u ovn-vipd -n 40 --no-pager >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# The checks.

readme_installs_and_starts_it_beside_ovn_central() {
  wait_for 60 is_active ovn-ovsdb-server-nb || fail "Debian's ovn-ovsdb-server-nb is not active"
  wait_for 60 is_active ovn-northd || fail "Debian's ovn-northd is not active"
  # README's "Under systemd" block, line by line, in the checkout.
  awk '/^## Under systemd/ { section = 1 } section && /^```/ { if (inside) exit; inside = 1; next }
       section && inside' "$root/root/ovn-vipd/README.md" >"$root/root/under-systemd.sh"
  [ -s "$root/root/under-systemd.sh" ] || fail "README has no \"Under systemd\" block"
  # For working on this script only: binaries already in target/release, README's build skipped.
  [ "${OVN_VIPD_CHECK_PREBUILT:-0}" = 0 ] || sed -i '/^cargo build/d' "$root/root/under-systemd.sh"
  in_container bash -euxc 'cd /root/ovn-vipd && . /root/under-systemd.sh' >"$work/readme.log" 2>&1 ||
    { cat "$work/readme.log" >&2; fail "README's lines failed"; }
  [ "$(in_container systemctl is-enabled ovn-vipd)" = enabled ] || fail "not enabled"
  is_active || fail "not active after enable --now: $(show ActiveState)/$(show SubState)"
}

start_returns_only_after_ready() {
  in_container systemctl stop ovn-vipd || fail "stop"
  # With NB down (masked, so the unit's Wants= cannot start it) the daemon runs but is not READY:
  # the unit stays "activating".
  in_container systemctl stop ovn-northd ovn-ovsdb-server-nb || fail "stopping NB"
  in_container systemctl mask --runtime ovn-ovsdb-server-nb >/dev/null || fail "mask NB"
  in_container systemctl start --no-block ovn-vipd || fail "start --no-block"
  wait_for 30 journal_has "store open" || fail "the daemon did not start"
  sleep 3
  [ "$(show ActiveState)" = activating ] || fail "without NB the unit is $(show ActiveState), not activating"
  ! journal_has "first NB sync done; ready" || fail "READY without NB"
  in_container systemctl unmask --runtime ovn-ovsdb-server-nb >/dev/null || fail "unmask NB"
  in_container systemctl start ovn-ovsdb-server-nb ovn-northd || fail "starting NB"
  wait_for 60 is_active || fail "not active once NB is back: $(show ActiveState)"
  # A synchronous start returns only when the daemon has said READY=1: the line it logs just
  # before is already in the journal, and the unit is active, the moment systemctl returns.
  in_container systemctl restart ovn-vipd || fail "restart"
  is_active || fail "systemctl restart returned with the unit $(show ActiveState)"
  journal_has "first NB sync done; ready" || fail "systemctl returned before the first sync"
}

reload_rereads_the_configuration() {
  local pid config=/etc/ovn-vipd/ovn-vipd.toml
  pid=$(show MainPID)
  cp "$root$config" "$work/config"
  # Put the file back however the check ends (it runs in a subshell of its own).
  trap "cp '$work/config' '$root$config'; in_container systemctl reload ovn-vipd" EXIT
  printf 'log = "info,ovn_vipd=debug"\nresync-interval = 77\n' >>"$root$config"
  in_container systemctl reload ovn-vipd || fail "reload"
  wait_for 20 journal_has "configuration reloaded" || fail "no \"configuration reloaded\""
  journal_now | grep "take effect at the next restart" | grep -c resync-interval >/dev/null ||
    fail "the changed resync-interval was not named"
  [ "$(show MainPID)" = "$pid" ] || fail "reload restarted the daemon"
}

watchdog_restarts_a_stopped_daemon() {
  local pid restarts
  pid=$(show MainPID) restarts=$(show NRestarts)
  in_container /bin/sh -c "kill -STOP $pid" || fail "SIGSTOP"
  # WatchdogSec=60: killed after 60 s without a keep-alive, restarted after RestartSec=2.
  wait_for 150 bash -c "[ \"\$(nsenter -t $leader -a systemctl show -p MainPID --value ovn-vipd)\" != $pid ]" ||
    fail "still $pid after 150 s"
  wait_for 60 is_active || fail "not active again after the watchdog: $(show ActiveState)"
  [ "$(show NRestarts)" -gt "$restarts" ] || fail "NRestarts did not grow"
  in_container journalctl -q -u ovn-vipd -o cat | grep -ci "watchdog timeout" >/dev/null ||
    fail "systemd logged no watchdog timeout"
}

stop_is_graceful_and_the_store_flushed() {
  cat >"$root/root/fresh-vip.yaml" <<'YAML'
apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: ovn-default
spec:
  protocol: IPv4
  cidrBlock: 10.16.0.0/16
  gateway: 10.16.0.1
  excludeIps:
  - 10.16.0.1
---
apiVersion: kubeovn.io/v1
kind: Vip
metadata:
  name: vip-before-stop
spec:
  subnet: ovn-default
YAML
  in_container vipctl apply -f /root/fresh-vip.yaml >&2 || fail "vipctl apply"
  in_container systemctl stop ovn-vipd || fail "stop"
  [ "$(show ExecMainStatus)" = 0 ] || fail "exit status $(show ExecMainStatus)"
  [ "$(show Result)" = success ] || fail "result $(show Result)"
  in_container journalctl -q -u ovn-vipd -o cat -n 20 | grep -cF "store flushed; stopped" >/dev/null ||
    fail "no \"store flushed; stopped\""
  # What was acknowledged is in the store, and store and NB agree.
  in_container ovn-vipd check --config /etc/ovn-vipd/ovn-vipd.toml >&2 || fail "ovn-vipd check"
  in_container systemctl start ovn-vipd || fail "start again"
  in_container vipctl get vip vip-before-stop >&2 || fail "the VIP is gone after the restart"
}

the_journal_holds_plain_lines() {
  local lines
  lines=$(in_container journalctl -q -u ovn-vipd -o cat _COMM=ovn-vipd | wc -l)
  [ "$lines" -gt 5 ] || fail "only $lines lines from ovn-vipd in the journal"
  if in_container journalctl -q -u ovn-vipd -o cat _COMM=ovn-vipd | grep -c $'\x1b' >/dev/null; then
    fail "escape characters in the journal: $(in_container journalctl -q -u ovn-vipd -o cat | grep -m3 $'\x1b' | cat -v)"
  fi
}

at_boot_it_starts_after_nb() {
  # The container was powered off and booted again just before (ovn-vipd is enabled).
  wait_for 120 is_active || fail "not active after boot: $(show ActiveState)/$(show SubState)"
  local nb_up vipd_start
  nb_up=$(show ActiveEnterTimestampMonotonic ovn-ovsdb-server-nb)
  vipd_start=$(show ExecMainStartTimestampMonotonic)
  [ "$nb_up" -gt 0 ] && [ "$vipd_start" -ge "$nb_up" ] ||
    fail "ovn-vipd started at $vipd_start, NB was up at $nb_up (monotonic µs)"
  journal_has "first NB sync done; ready" || fail "no first sync after boot"
}

# ---------------------------------------------------------------------------------------------
boot || { echo "0 passed, 1 failed"; exit 1; }
for check in readme_installs_and_starts_it_beside_ovn_central start_returns_only_after_ready \
  reload_rereads_the_configuration watchdog_restarts_a_stopped_daemon the_journal_holds_plain_lines \
  stop_is_graceful_and_the_store_flushed; do
  run_test "$check"
done
halt
if boot; then
  run_test at_boot_it_starts_after_nb
else
  echo "test systemd::at_boot_it_starts_after_nb ... FAILED"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
