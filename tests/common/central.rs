//! Three OVN central hosts on one machine, as a production central runs on three: each host is a
//! network namespace (`vipd-ce-h1..3`) with its own address on one bridge, and runs
//! - an OVN NB RAFT member (the real `ovn-nb.ovsschema`, `ovsdb-tool create-cluster` on host 1,
//!   `join-cluster` on hosts 2 and 3, as OVN-NOTES.md "Clustered NB" runs it),
//! - an `OVN_VIPD` RAFT member (`deploy/ovn-vipd.ovsschema`, made the same way), and
//! - the `ovn-vipd` binary with a data directory of its own, gRPC and metrics on the host's
//!   address, `--ovn-nb` the three NB members and, in [`Mode::Clustered`], `--cluster-db` the
//!   three `OVN_VIPD` members and `--advertise-address` its own gRPC address.
//!
//! Addresses: host N is `10.251.0.N/24` on `eth0` in its namespace, the other end of its veth
//! (`vipd-ce-hN`) is a port of the bridge `vipd-ce-br` in the root namespace, which carries
//! `10.251.0.254/24` so that the test's clients (in the root namespace) reach every host as a
//! client elsewhere would. Ports, the same on every host: NB [`NB_PORT`] (RAFT [`NB_RAFT_PORT`]),
//! `OVN_VIPD` [`CLUSTER_PORT`] (RAFT [`CLUSTER_RAFT_PORT`]), gRPC [`GRPC_PORT`], metrics
//! [`METRICS_PORT`]. Every server also has a unix socket in the host's directory, for the
//! test's own judges (`ovn-nbctl`, `ovsdb-client`, `ovs-appctl`): a unix socket is not cut off
//! by a link going down, which is what a judge needs.
//!
//! Faults, as they happen to a host: [`Central::kill_host`] SIGKILLs every process of a host,
//! [`Central::cut_link`] / [`Central::restore_link`] set its `eth0` down and up (nothing is
//! closed: peers find out by their probes and RAFT timers), [`Central::restart_daemon`] stops a
//! daemon with SIGTERM as systemd does and starts it again on the same data directory.
//!
//! RAFT election timers are set to [`ELECTION_TIMER_MS`] on both databases after the first
//! leader is elected (`ovsdb-tool create-cluster` has no option for it; ovsdb(7) and
//! `cluster/change-election-timer` in ovsdb-server(1)), so that a dead leader is replaced well
//! within the 3 s takeover the issue asks for.
//!
//! Everything is named with [`PREFIX`]; [`Central`] holds [`super::ovn::lock`], records its PIDs
//! in [`PID_FILE`] so that a run killed half-way is cleaned up by the next one, and removes all
//! of it (processes by PID, namespaces, the bridge) when dropped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ovn::{self, MachineLock};
use super::{run, wait_until, NB_SCHEMA};

/// Names of everything made here start with this.
pub const PREFIX: &str = "vipd-ce-";
/// The bridge in the root namespace joining the hosts.
pub const BRIDGE: &str = "vipd-ce-br";
/// The PIDs of the current run, for the next run to find.
pub const PID_FILE: &str = "/tmp/ovn-vipd-ce.pids";
/// The root namespace's address on [`BRIDGE`] (where the test's clients are).
pub const ROOT_ADDRESS: &str = "10.251.0.254";
pub const NB_PORT: u16 = 6641;
pub const NB_RAFT_PORT: u16 = 6643;
pub const CLUSTER_PORT: u16 = 6647;
pub const CLUSTER_RAFT_PORT: u16 = 6648;
pub const GRPC_PORT: u16 = 50051;
pub const METRICS_PORT: u16 = 50052;
/// RAFT election timer of both databases, in milliseconds (OVSDB's default is 1000).
pub const ELECTION_TIMER_MS: u32 = 500;
/// The `vipctl` binary of this build.
pub const VIPCTL: &str = env!("CARGO_BIN_EXE_vipctl");
pub const NB_DATABASE: &str = "OVN_Northbound";
pub const CLUSTER_DATABASE: &str = "OVN_VIPD";

/// The schema of the cluster database, as shipped.
pub fn cluster_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ovn-vipd.ovsschema")
}

/// How the daemons run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No daemon is started (the databases only).
    None,
    /// Each daemon with its own sled store and the NB lock only (no `--cluster-db`).
    Standalone,
    /// `--cluster-db` the three `OVN_VIPD` members and `--advertise-address` its own address.
    Clustered,
}

/// Host `number`'s address (1, 2, 3).
pub fn host_address(number: usize) -> String {
    format!("10.251.0.{number}")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn record_pid(pid: u32, program: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(PID_FILE) {
        let _ = writeln!(file, "{pid} {program}");
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut running) = child.take() {
        let _ = running.kill();
        let _ = running.wait();
    }
}

/// One RAFT member of one database (NB or `OVN_VIPD`) on one host.
pub struct Member {
    /// `nb` or `vipd`: the file names in the host's directory.
    pub name: &'static str,
    pub database: &'static str,
    pub netns: String,
    pub address: String,
    pub port: u16,
    pub dir: PathBuf,
    pub db_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.sock", self.name))
    }

    pub fn ctl(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.name))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The remote clients on other hosts use.
    pub fn tcp_remote(&self) -> String {
        format!("tcp:{}:{}", self.address, self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `ovsdb-server` in the host's namespace on the unix socket and the host's address.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} of {} already running", self.name, self.netns);
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ovsdb-server", "--no-chdir"])
            .arg(format!("--unixctl={}", self.ctl().display()))
            .arg(format!("--log-file={}", self.log_path().display()))
            .arg("-vraft:file:dbg")
            .arg(format!("--remote=punix:{}", self.socket().display()))
            .arg(format!("--remote=ptcp:{}:{}", self.port, self.address))
            .arg(&self.db_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ovsdb-server (package openvswitch-common)");
        // `ip netns exec` execs the program itself: the PID is ovsdb-server's.
        record_pid(child.id(), "ovsdb-server");
        self.child = Some(child);
    }

    pub fn wait_listening(&self) {
        let socket = self.socket();
        wait_until(
            &format!("{} of {} to listen", self.name, self.netns),
            Duration::from_secs(15),
            || socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        );
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// `ovs-appctl cluster/status` (empty when the server does not answer).
    pub fn cluster_status(&self) -> String {
        if self.child.is_none() {
            return String::new();
        }
        Command::new("ovs-appctl")
            .args([
                "--timeout=5",
                "-t",
                path_str(&self.ctl()),
                "cluster/status",
                self.database,
            ])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn is_leader(&self) -> bool {
        self.cluster_status().contains("Role: leader")
    }

    /// `ovs-appctl` on this member: (success, stdout + stderr).
    pub fn appctl(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new("ovs-appctl")
            .args(["--timeout=5", "-t", path_str(&self.ctl())])
            .args(args)
            .output()
            .expect("ovs-appctl");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// `ovsdb-client transact` through the unix socket (a judge: not affected by the link).
    pub fn transact(&self, operations: &str) -> String {
        run(
            "ovsdb-client",
            &[
                "--timeout=10",
                "transact",
                &self.unix_remote(),
                &format!("[\"{}\",{operations}]", self.database),
            ],
        )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `ovn-vipd` process of a host.
pub struct DaemonProc {
    child: Option<Child>,
    /// Its stderr (the log), appended to by every start.
    pub log: PathBuf,
}

impl DaemonProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// One central host.
pub struct Host {
    pub number: usize,
    pub netns: String,
    pub address: String,
    pub dir: PathBuf,
    pub nb: Member,
    pub cluster: Member,
    pub daemon: DaemonProc,
    /// Extra daemon arguments (tests may add settings).
    pub extra_args: Vec<String>,
    link_up: bool,
}

impl Host {
    /// The gRPC address (client syntax, also what it advertises).
    pub fn grpc_address(&self) -> String {
        format!("tcp:{}:{GRPC_PORT}", self.address)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn link_is_up(&self) -> bool {
        self.link_up
    }

    /// The daemon's `/metrics` text (None when it does not answer within a second).
    pub fn metrics(&self) -> Option<String> {
        http_get(&self.address, METRICS_PORT, "/metrics", Duration::from_secs(1))
    }

    /// A sample of the daemon's metrics (`name` with its labels as rendered).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().and_then(|text| sample(&text, name))
    }

    /// The daemon's `/metrics` text fetched from inside the host's namespace (works while its
    /// link is down; python3 is a test dependency already).
    pub fn metrics_inside(&self) -> Option<String> {
        let script = format!(
            "import urllib.request; print(urllib.request.urlopen('http://{}:{METRICS_PORT}/metrics', timeout=2).read().decode())",
            self.address
        );
        let output = self.exec(&["python3", "-c", &script]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The daemon says it is the active one (`ovn_vipd_active 1`).
    pub fn is_active(&self) -> bool {
        self.daemon.running() && self.link_up && self.metric("ovn_vipd_active") == Some(1.0)
    }

    /// Runs a command inside the host's namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

/// Three central hosts; torn down when dropped.
pub struct Central {
    pub mode: Mode,
    pub hosts: Vec<Host>,
    pub dir: PathBuf,
    _tempdir: tempfile::TempDir,
    _lock: MachineLock,
}

impl Central {
    /// Makes the three hosts, their two RAFT clusters (a leader elected, every member joined,
    /// election timers shortened), and in `mode` starts a daemon on each.
    pub fn start(mode: Mode) -> Central {
        Central::start_with(mode, &[])
    }

    /// The same with `extra_args` given to every daemon.
    pub fn start_with(mode: Mode, extra_args: &[&str]) -> Central {
        assert!(
            run("id", &["-u"]).trim() == "0",
            "the central-host tests need root (network namespaces, veths, a bridge); CI runs them as root"
        );
        let lock = ovn::lock();
        clean_up_earlier_runs();
        super::init_tracing();
        let tempdir = tempfile::Builder::new().prefix(PREFIX).tempdir().expect("tempdir");
        let dir = tempdir.path().to_path_buf();

        run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        run("ip", &["addr", "add", &format!("{ROOT_ADDRESS}/24"), "dev", BRIDGE]);
        run("ip", &["link", "set", BRIDGE, "up"]);
        let mut hosts = Vec::new();
        for number in 1..=3 {
            let netns = format!("{PREFIX}h{number}");
            let address = host_address(number);
            let root_end = format!("{PREFIX}h{number}");
            run("ip", &["netns", "add", &netns]);
            run("ip", &["-n", &netns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &[
                    "link", "add", &root_end, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            );
            run("ip", &["link", "set", &root_end, "master", BRIDGE]);
            run("ip", &["link", "set", &root_end, "up"]);
            run(
                "ip",
                &["-n", &netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            );
            run("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
            let host_dir = dir.join(format!("h{number}"));
            std::fs::create_dir_all(&host_dir).expect("host dir");
            let member = |name: &'static str, database: &'static str, port: u16| Member {
                name,
                database,
                netns: netns.clone(),
                address: address.clone(),
                port,
                dir: host_dir.clone(),
                db_path: host_dir.join(format!("{name}.db")),
                child: None,
            };
            hosts.push(Host {
                number,
                nb: member("nb", NB_DATABASE, NB_PORT),
                cluster: member("vipd", CLUSTER_DATABASE, CLUSTER_PORT),
                daemon: DaemonProc {
                    child: None,
                    log: host_dir.join("ovn-vipd.log"),
                },
                netns,
                address,
                dir: host_dir,
                extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
                link_up: true,
            });
        }
        for number in 1..=3 {
            let peer = host_address(number % 3 + 1);
            wait_until(
                &format!("host {number} reaches {peer}"),
                Duration::from_secs(10),
                || hosts[number - 1].exec(&["ping", "-c1", "-W1", &peer]).status.success(),
            );
        }

        // The two RAFT clusters, made as an operator makes them.
        let cluster_schema = cluster_schema();
        for (database, schema, raft_port) in [
            (NB_DATABASE, PathBuf::from(NB_SCHEMA), NB_RAFT_PORT),
            (CLUSTER_DATABASE, cluster_schema, CLUSTER_RAFT_PORT),
        ] {
            let first = format!("tcp:{}:{raft_port}", host_address(1));
            for host in &hosts {
                let member = if database == NB_DATABASE {
                    &host.nb
                } else {
                    &host.cluster
                };
                let local = format!("tcp:{}:{raft_port}", host.address);
                if host.number == 1 {
                    run(
                        "ovsdb-tool",
                        &["create-cluster", path_str(&member.db_path), path_str(&schema), &local],
                    );
                } else {
                    run(
                        "ovsdb-tool",
                        &["join-cluster", path_str(&member.db_path), database, &local, &first],
                    );
                }
            }
        }
        let mut central = Central {
            mode,
            hosts,
            dir,
            _tempdir: tempdir,
            _lock: lock,
        };
        // The joining members wait for the first: start them all before waiting on any.
        for host in &mut central.hosts {
            host.nb.start();
            host.cluster.start();
        }
        for host in &central.hosts {
            host.nb.wait_listening();
            host.cluster.wait_listening();
        }
        for database in [NB_DATABASE, CLUSTER_DATABASE] {
            central.wait_for_leader(database, Duration::from_secs(30));
            for host in &central.hosts {
                let member = central.member(host.number, database);
                wait_until(
                    &format!("{database} member of host {} to finish joining", host.number),
                    Duration::from_secs(30),
                    || member.cluster_status().contains("Status: cluster member"),
                );
            }
            central.shorten_election_timer(database);
        }
        if mode != Mode::None {
            for number in 1..=3 {
                central.start_daemon(number);
            }
            central.wait_for_active(Duration::from_secs(30));
        }
        central
    }

    pub fn host(&self, number: usize) -> &Host {
        &self.hosts[number - 1]
    }

    fn member(&self, number: usize, database: &str) -> &Member {
        let host = self.host(number);
        if database == NB_DATABASE {
            &host.nb
        } else {
            &host.cluster
        }
    }

    /// The NB members' remotes, comma-separated (what `--ovn-nb` gets).
    pub fn nb_remotes(&self) -> String {
        self.hosts
            .iter()
            .map(|host| host.nb.tcp_remote())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `OVN_VIPD` members' remotes (what `--cluster-db` gets).
    pub fn cluster_remotes(&self) -> String {
        self.hosts
            .iter()
            .map(|host| host.cluster.tcp_remote())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The three daemons' gRPC addresses (what `vipctl --server` and the CNI `server` get).
    pub fn daemon_addresses(&self) -> String {
        self.hosts.iter().map(Host::grpc_address).collect::<Vec<_>>().join(",")
    }

    /// The host whose member of `database` is the leader.
    pub fn leader(&self, database: &str) -> Option<usize> {
        self.hosts
            .iter()
            .find(|host| {
                let member = self.member(host.number, database);
                member.running() && host.link_up && member.is_leader()
            })
            .map(|host| host.number)
    }

    pub fn wait_for_leader(&self, database: &str, timeout: Duration) -> usize {
        let mut leader = None;
        wait_until(&format!("a {database} leader"), timeout, || {
            leader = self.leader(database);
            leader.is_some()
        });
        leader.unwrap_or_default()
    }

    /// `cluster/change-election-timer` on the leader, halving from the default (1000 ms) down
    /// to [`ELECTION_TIMER_MS`] (a leader refuses to change it while a change is in flight).
    fn shorten_election_timer(&self, database: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self.wait_for_leader(database, Duration::from_secs(30));
            let member = self.member(leader, database);
            let (ok, text) = member.appctl(&[
                "cluster/change-election-timer",
                database,
                &ELECTION_TIMER_MS.to_string(),
            ]);
            if ok
                && member
                    .cluster_status()
                    .contains(&format!("Election timer: {ELECTION_TIMER_MS}"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "could not set {database}'s election timer to {ELECTION_TIMER_MS} ms: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon's command line on host `number`.
    pub fn daemon_args(&self, number: usize) -> Vec<String> {
        let host = self.host(number);
        let mut args = vec![
            format!("--ovn-nb={}", self.nb_remotes()),
            format!("--data-dir={}", host.data_dir().display()),
            format!("--listen={}", host.grpc_address()),
            "--insecure".to_string(),
            format!("--metrics-listen={}:{METRICS_PORT}", host.address),
            "--shutdown-grace=2".to_string(),
        ];
        if self.mode == Mode::Clustered {
            args.push(format!("--cluster-db={}", self.cluster_remotes()));
            args.push(format!("--advertise-address={}", host.grpc_address()));
        }
        args.extend(host.extra_args.iter().cloned());
        args
    }

    /// Starts host `number`'s daemon in its namespace (its log appended to `ovn-vipd.log`) and
    /// waits until it serves gRPC health.
    pub fn start_daemon(&mut self, number: usize) {
        let args = self.daemon_args(number);
        let host = &mut self.hosts[number - 1];
        assert!(!host.daemon.running(), "host {number}'s daemon is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host.daemon.log)
            .expect("daemon log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.netns, super::process::BINARY])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, _) in std::env::vars() {
            if key.starts_with("OVN_VIPD_") || key == "NOTIFY_SOCKET" || key.starts_with("WATCHDOG_") {
                command.env_remove(key);
            }
        }
        command.env("NO_COLOR", "1");
        let child = command.spawn().expect("start ovn-vipd");
        record_pid(child.id(), "ovn-vipd");
        host.daemon.child = Some(child);
        let address = host.address.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&address, METRICS_PORT, "/metrics", Duration::from_secs(1)).is_none() {
            if let Some(Ok(Some(status))) = host.daemon.child.as_mut().map(Child::try_wait) {
                host.daemon.child = None;
                panic!(
                    "host {number}'s daemon exited ({status}) before serving:\n{}",
                    host.daemon.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "host {number}'s daemon did not serve metrics within 30 s:\n{}",
                host.daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs host `number`'s daemon only.
    pub fn kill_daemon(&mut self, number: usize) {
        kill_child(&mut self.hosts[number - 1].daemon.child);
    }

    /// Stops host `number`'s daemon as systemd does (SIGTERM, then waits for it to exit).
    pub fn stop_daemon(&mut self, number: usize) {
        let host = &mut self.hosts[number - 1];
        if let Some(mut child) = host.daemon.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("host {number}'s daemon did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A daemon restart as `systemctl restart` does it: SIGTERM, wait, start.
    pub fn restart_daemon(&mut self, number: usize) {
        self.stop_daemon(number);
        self.start_daemon(number);
    }

    /// SIGKILLs every process of host `number`: its daemon and both RAFT members.
    pub fn kill_host(&mut self, number: usize) {
        let host = &mut self.hosts[number - 1];
        kill_child(&mut host.daemon.child);
        host.nb.kill();
        host.cluster.kill();
    }

    /// Starts host `number` again after [`Central::kill_host`]: both members on their files,
    /// then (unless [`Mode::None`]) the daemon on its data directory.
    pub fn start_host(&mut self, number: usize) {
        {
            let host = &mut self.hosts[number - 1];
            if !host.nb.running() {
                host.nb.start();
            }
            if !host.cluster.running() {
                host.cluster.start();
            }
            host.nb.wait_listening();
            host.cluster.wait_listening();
        }
        if self.mode != Mode::None && !self.host(number).daemon.running() {
            self.start_daemon(number);
        }
    }

    /// Sets host `number`'s link down: it can reach nobody and nobody reaches it (no
    /// connection is closed; its peers find out by their probes and timers).
    pub fn cut_link(&mut self, number: usize) {
        let host = &mut self.hosts[number - 1];
        run("ip", &["-n", &host.netns, "link", "set", "eth0", "down"]);
        host.link_up = false;
    }

    pub fn restore_link(&mut self, number: usize) {
        let host = &mut self.hosts[number - 1];
        run("ip", &["-n", &host.netns, "link", "set", "eth0", "up"]);
        host.link_up = true;
    }

    /// The hosts whose daemon says it is active (metric `ovn_vipd_active`).
    pub fn actives(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .filter(|host| host.is_active())
            .map(|host| host.number)
            .collect()
    }

    /// Waits until exactly one reachable daemon says it is active; its host.
    pub fn wait_for_active(&self, timeout: Duration) -> usize {
        let mut found = Vec::new();
        wait_until("exactly one active daemon", timeout, || {
            found = self.actives();
            found.len() == 1
        });
        found[0]
    }

    /// A live member of `database` reachable over its unix socket (the leader when known).
    pub fn judge(&self, database: &str) -> &Member {
        let number = self
            .leader(database)
            .or_else(|| {
                self.hosts
                    .iter()
                    .find(|host| self.member(host.number, database).running())
                    .map(|host| host.number)
            })
            .expect("a running member");
        self.member(number, database)
    }

    /// `ovn-nbctl` against a running NB member (the leader when known): the independent judge
    /// of what is in NB.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.judge(NB_DATABASE).unix_remote());
        let mut all = vec![db.as_str(), "--no-leader-only", "--timeout=10"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    /// The `Active` row of the cluster database: (epoch, daemon, address), None when there is
    /// none.
    pub fn active_row(&self) -> Option<(i64, String, String)> {
        let text = self
            .judge(CLUSTER_DATABASE)
            .transact(r#"{"op":"select","table":"Active","where":[],"columns":["epoch","daemon","address"]}"#);
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        let row = value.get(0)?.get("rows")?.get(0)?;
        Some((
            row.get("epoch")?.as_i64().unwrap_or_default(),
            row.get("daemon")?.as_str().unwrap_or_default().to_string(),
            row.get("address")?.as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Client settings naming all three daemons.
    pub fn client_settings(&self, failover_timeout: Duration) -> ovn_vipd::client::Settings {
        ovn_vipd::client::Settings {
            addresses: ovn_vipd::client::Address::parse_list(&self.daemon_addresses()).expect("addresses"),
            tls: ovn_vipd::client::TlsFiles::default(),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            failover_timeout,
        }
    }

    /// A client of the three daemons (src/client.rs, as vipctl and the CNI plugin use it),
    /// starting at host `first`.
    pub async fn client(&self, first: usize, failover_timeout: Duration) -> ovn_vipd::client::Daemons {
        let mut settings = self.client_settings(failover_timeout);
        settings.addresses.rotate_left(first - 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ovn_vipd::client::Daemons::connect(settings.clone()).await {
                Ok(daemons) => return daemons,
                Err(error) => assert!(Instant::now() < deadline, "no daemon answered: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `vipctl --server <the three addresses> args…`: (exit code, stdout, stderr).
    pub fn vipctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(VIPCTL)
            .arg("--server")
            .arg(self.daemon_addresses())
            .args(args)
            .env_remove("VIPCTL_SERVER")
            .output()
            .expect("run vipctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `ovn-vipd check` on host `number`'s data directory (its daemon must be stopped: the store
    /// is opened exclusively) against the NB cluster: (exit code, stdout, stderr).
    pub fn check(&self, number: usize) -> (i32, String, String) {
        let mut args = vec![
            "check".to_string(),
            format!("--data-dir={}", self.host(number).data_dir().display()),
            format!("--ovn-nb={}", self.nb_remotes()),
        ];
        if self.mode == Mode::Clustered {
            args.push(format!("--cluster-db={}", self.cluster_remotes()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::process::run_binary(&args, &[])
    }

    /// Every log of the run (daemons and servers), for a failing test's message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for host in &self.hosts {
            let tail = |log: String| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            text.push_str(&format!(
                "--- host {} ovn-vipd ---\n{}\n--- host {} vipd db ---\n{}\n",
                host.number,
                tail(host.daemon.log_text()),
                host.number,
                tail(host.cluster.log()),
            ));
        }
        text
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            kill_child(&mut host.daemon.child);
            host.nb.kill();
            host.cluster.kill();
        }
        remove_links_and_namespaces();
        let _ = std::fs::remove_file(PID_FILE);
        if std::env::var_os("VIPD_CE_KEEP").is_some() {
            let kept = self.dir.with_extension("kept");
            let _ = std::fs::rename(&self.dir, &kept);
            eprintln!("central-host files kept in {}", kept.display());
        }
    }
}

fn remove_links_and_namespaces() {
    let namespaces = run("ip", &["netns", "list"]);
    for namespace in namespaces.lines().filter_map(|line| line.split_whitespace().next()) {
        if namespace.starts_with(PREFIX) {
            let _ = Command::new("ip").args(["netns", "del", namespace]).status();
        }
    }
    for number in 1..=3 {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &format!("{PREFIX}h{number}")])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("ip")
        .args(["link", "del", "dev", BRIDGE])
        .stderr(Stdio::null())
        .status();
}

/// Stops what a killed run left behind: its processes (by the PIDs it recorded, when the
/// process is still that program), its namespaces, veths and bridge.
pub fn clean_up_earlier_runs() {
    if let Ok(text) = std::fs::read_to_string(PID_FILE) {
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let (Some(pid), Some(program)) = (fields.next(), fields.next()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(program) {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = std::fs::remove_file(PID_FILE);
    }
    remove_links_and_namespaces();
}

/// One HTTP/1.1 GET to `host:port` with a time-out: the body, None when it does not answer.
pub fn http_get(host: &str, port: u16, target: &str, timeout: Duration) -> Option<String> {
    let address: std::net::SocketAddr = format!("{host}:{port}").parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the sample `name` (with its labels exactly as rendered) in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}
