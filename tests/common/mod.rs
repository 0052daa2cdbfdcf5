//! The one test harness: real `ovsdb-server` processes with the real OVN NB schema, started as
//! children of the test (so each is stopped by its PID when the test ends, pass or fail), in a
//! temporary directory of their own.
#![allow(dead_code)]

pub mod central;
pub mod chassis;
pub mod ovn;
pub mod process;
pub mod requests;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// A TCP port held for one test, for the few servers that must know their port before they
/// start or keep it across a restart (RAFT members name their address in the database, a
/// restarted daemon must come back where its clients dial, a compose file names its ports).
/// Everything else binds port 0 and learns the port ([`OvsdbServer::port`],
/// [`TestDaemon::endpoint`], [`process::DaemonProcess::grpc_port`]).
///
/// The port is taken from 20000–29999, below Linux's ephemeral range (32768–60999 by default), so
/// no `bind(…:0)` anywhere on the machine is handed it; tests of every checkout pick from that
/// range only through this function, which holds an exclusive flock on
/// `/tmp/ovn-vipd-port-<port>.lock` for as long as the value lives. So a reserved port is taken by
/// no parallel test between this check and the server's bind, and stays ours across restarts.
pub struct ReservedPort {
    pub port: u16,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

pub fn reserve_port() -> ReservedPort {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (first, count) = (20000u16, 10000u16);
    // Start somewhere different in each test process, then walk.
    let offset = (std::process::id() % u32::from(count)) as u16;
    for _ in 0..count {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % count;
        let port = first + (offset + step) % count;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("/tmp/ovn-vipd-port-{port}.lock"))
            .expect("open a port lock file");
        let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        // Held by something outside the tests (or a server of an earlier run still alive): next.
        if TcpListener::bind(("127.0.0.1", port)).is_err() || TcpListener::bind(("0.0.0.0", port)).is_err() {
            continue;
        }
        return ReservedPort { port, _lock: lock };
    }
    panic!("no port left to reserve in 20000-29999");
}

pub fn run(command: &str, args: &[&str]) -> String {
    let output = Command::new(command)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    assert!(
        output.status.success(),
        "{command} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Has an in-process daemon run with `config` report its TCP gRPC addresses (set its listener to
/// `tcp:127.0.0.1:0`); after starting it, [`bound_port`] says which port the kernel chose.
pub fn report_grpc_bound(
    config: &mut ovn_vipd::daemon::DaemonConfig,
) -> tokio::sync::mpsc::UnboundedReceiver<std::net::SocketAddr> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    config.grpc_bound = Some(sender);
    receiver
}

/// The next TCP gRPC port the daemon reports through [`report_grpc_bound`]'s receiver (20 s).
pub async fn bound_port(bound: &mut tokio::sync::mpsc::UnboundedReceiver<std::net::SocketAddr>) -> u16 {
    tokio::time::timeout(Duration::from_secs(20), bound.recv())
        .await
        .expect("the daemon never bound its gRPC port")
        .expect("the daemon stopped before binding its gRPC port")
        .port()
}

/// [`wait_until`] that hands back what it waited for: `attempt` gives `Ok(value)` when the
/// condition holds, or `Err(what it saw)`, shown in the panic message at the timeout.
pub fn wait_for_blocking<T>(what: &str, timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match attempt() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until_async`] for a condition that must await (an RPC, a connection): `attempt` gives
/// `Ok(value)` when the condition holds, or `Err(what it saw)`; the last one is in the panic
/// message at the timeout. Make the attempt own what it uses (clone a client, move it in).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match attempt().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_until_async(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CA of its own (`prefix`) and a certificate it signed for each name (also its DNS name).
pub fn issue_certificates(dir: &Path, prefix: &str, names: &[&str]) -> Vec<TlsPaths> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = dir.join(format!("{prefix}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let issue = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.signed_by(&key, &ca, &ca_key).unwrap();
        let key_path = dir.join(format!("{prefix}-{name}-key.pem"));
        let cert_path = dir.join(format!("{prefix}-{name}-cert.pem"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(&cert_path, certificate.pem()).unwrap();
        TlsPaths {
            private_key: key_path,
            certificate: cert_path,
            ca_certificate: ca_path.clone(),
        }
    };
    names.iter().map(|name| issue(name)).collect()
}

/// TLS files for an ovsdb-server (`pssl:`) or a client (`ssl:`).
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_certificate: PathBuf,
}

/// One ovsdb-server process serving one database file.
pub struct OvsdbServer {
    pub name: String,
    pub dir: PathBuf,
    pub db_path: PathBuf,
    pub socket: PathBuf,
    /// The TCP (or SSL) port on 127.0.0.1: the server binds port 0 and this is what the kernel
    /// gave it, read from its log at each start (0 before the first start).
    pub port: u16,
    /// `tcp` or `ssl`.
    pub tcp_kind: &'static str,
    pub tls: Option<TlsPaths>,
    /// Debug logging records every request in full: tests read it, benchmarks must not pay it.
    pub debug_log: bool,
    /// The database `cluster/status` asks about (a clustered member's).
    pub database: String,
    child: Option<Child>,
    /// Where this start's lines begin in the log (a restart appends).
    log_offset: u64,
}

impl OvsdbServer {
    /// Creates a standalone database from `schema` in `dir` and starts serving it.
    pub fn standalone(dir: &Path, name: &str, schema: &Path) -> OvsdbServer {
        let db_path = dir.join(format!("{name}.db"));
        run("ovsdb-tool", &["create", path_str(&db_path), path_str(schema)]);
        let mut server = OvsdbServer::new(dir, name, db_path, None);
        server.start();
        server
    }

    /// A standalone NB database with the real OVN schema.
    pub fn nb(dir: &Path) -> OvsdbServer {
        OvsdbServer::standalone(dir, "nb", Path::new(NB_SCHEMA))
    }

    /// The same, logging at the default level only (for benchmarks).
    pub fn nb_quiet(dir: &Path) -> OvsdbServer {
        let db_path = dir.join("nb.db");
        run("ovsdb-tool", &["create", path_str(&db_path), NB_SCHEMA]);
        let mut server = OvsdbServer::new(dir, "nb", db_path, None);
        server.debug_log = false;
        server.start();
        server
    }

    /// A standalone NB database served over `pssl:` (and the unix socket).
    pub fn nb_ssl(dir: &Path, tls: TlsPaths) -> OvsdbServer {
        let db_path = dir.join("nb.db");
        run("ovsdb-tool", &["create", path_str(&db_path), NB_SCHEMA]);
        let mut server = OvsdbServer::new(dir, "nb", db_path, Some(tls));
        server.start();
        server
    }

    /// A server (not started) for `db_path`; it listens on `name.sock` in `dir` and on a TCP (with
    /// `tls`, SSL) port the kernel chooses at each start.
    pub fn new(dir: &Path, name: &str, db_path: PathBuf, tls: Option<TlsPaths>) -> OvsdbServer {
        OvsdbServer {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            socket: dir.join(format!("{name}.sock")),
            db_path,
            port: 0,
            tcp_kind: if tls.is_some() { "ssl" } else { "tcp" },
            tls,
            debug_log: true,
            database: "OVN_Northbound".into(),
            child: None,
            log_offset: 0,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.start_no_wait();
        self.wait_listening();
        let socket = self.socket.clone();
        wait_until(
            &format!("{} to listen on its socket", self.name),
            Duration::from_secs(10),
            || socket.exists(),
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the server gets no chance to say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            run("kill", &[&format!("-{signal}"), &pid.to_string()]);
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn tcp_remote(&self) -> String {
        format!("{}:127.0.0.1:{}", self.tcp_kind, self.port)
    }

    /// Runs `ovn-nbctl` against this server: the independent judge of what is in NB.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.unix_remote());
        let mut all = vec![db.as_str(), "--no-leader-only"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A 3-member RAFT NB cluster on 127.0.0.1.
pub struct NbCluster {
    pub members: Vec<OvsdbServer>,
    _raft: Vec<ReservedPort>,
}

impl NbCluster {
    pub fn start(dir: &Path) -> NbCluster {
        NbCluster::start_schema(dir, NB_SCHEMA, "OVN_Northbound", "nb")
    }

    /// A 3-member RAFT cluster of any schema (e.g. `deploy/ovn-vipd.ovsschema`, database
    /// `OVN_VIPD`); members are named `<prefix>1..3`.
    pub fn start_schema(dir: &Path, schema: &str, database: &str, prefix: &str) -> NbCluster {
        // RAFT addresses are written into the databases before any server starts: reserved.
        let raft: Vec<ReservedPort> = (0..3).map(|_| reserve_port()).collect();
        let raft_ports: Vec<u16> = raft.iter().map(|reserved| reserved.port).collect();
        let mut members = Vec::new();
        for (index, raft_port) in raft_ports.iter().enumerate() {
            let name = format!("{prefix}{}", index + 1);
            let db_path = dir.join(format!("{name}.db"));
            let local = format!("tcp:127.0.0.1:{raft_port}");
            if index == 0 {
                run("ovsdb-tool", &["create-cluster", path_str(&db_path), schema, &local]);
            } else {
                let first = format!("tcp:127.0.0.1:{}", raft_ports[0]);
                run(
                    "ovsdb-tool",
                    &["join-cluster", path_str(&db_path), database, &local, &first],
                );
            }
            let mut member = OvsdbServer::new(dir, &name, db_path, None);
            member.database = database.to_string();
            members.push(member);
        }
        // The joining members wait for the first, so start them all before waiting on any.
        for member in &mut members {
            member.start_no_wait();
        }
        for member in &mut members {
            member.wait_listening();
        }
        let cluster = NbCluster { members, _raft: raft };
        cluster.wait_for_leader(Duration::from_secs(20));
        for member in &cluster.members {
            wait_until(
                &format!("{} to finish joining", member.name),
                Duration::from_secs(30),
                || member.cluster_status().contains("Status: cluster member"),
            );
        }
        cluster
    }

    pub fn remotes(&self) -> String {
        self.members
            .iter()
            .map(OvsdbServer::tcp_remote)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the member that reports itself leader.
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|member| member.child.is_some() && member.cluster_status().contains("Role: leader"))
    }

    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        let mut leader = None;
        wait_until("a cluster leader", timeout, || {
            leader = self.leader();
            leader.is_some()
        });
        leader.unwrap_or_default()
    }
}

impl OvsdbServer {
    pub fn cluster_status(&self) -> String {
        Command::new("ovs-appctl")
            .args([
                "-t",
                path_str(&self.dir.join(format!("{}.ctl", self.name))),
                "cluster/status",
                &self.database,
            ])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Starts ovsdb-server on the unix socket and the TCP (or, with TLS files, SSL) port.
    fn start_no_wait(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        self.log_offset = std::fs::metadata(self.log_path()).map(|meta| meta.len()).unwrap_or(0);
        let mut command = Command::new("ovsdb-server");
        command
            .arg("--no-chdir")
            .arg(format!(
                "--unixctl={}",
                self.dir.join(format!("{}.ctl", self.name)).display()
            ))
            .arg(format!(
                "--log-file={}",
                self.dir.join(format!("{}.log", self.name)).display()
            ))
            .arg(format!("--remote=punix:{}", self.socket.display()))
            // The first start lets the kernel choose the port; a restart binds the same one again
            // (clients of a restarted member, e.g. a daemon's `--cluster-db` list, keep their
            // remotes).
            .arg(format!("--remote=p{}:{}:127.0.0.1", self.tcp_kind, self.port));
        if self.debug_log {
            command.arg("-vfile:dbg");
        }
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--private-key={}", tls.private_key.display()))
                .arg(format!("--certificate={}", tls.certificate.display()))
                .arg(format!("--ca-cert={}", tls.ca_certificate.display()));
        }
        command
            .arg(&self.db_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(
            command
                .spawn()
                .expect("start ovsdb-server (is the openvswitch-common package installed?)"),
        );
    }

    /// Waits for this start's "listening on port N" in the log (the port the kernel chose for
    /// `p{tcp,ssl}:0:127.0.0.1`, or the one a restart bound again), takes it as [`OvsdbServer::port`] and waits until it accepts.
    fn wait_listening(&mut self) {
        if self.port != 0 {
            // A restart on the port it had: ovsdb-server logs the port only when it chose it.
            let port = self.port;
            wait_until(
                &format!("{} to accept again on {port}", self.name),
                Duration::from_secs(10),
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            );
            return;
        }
        let (log, offset) = (self.log_path(), self.log_offset as usize);
        let mut port = None;
        wait_until(
            &format!("{} to log its TCP port", self.name),
            Duration::from_secs(10),
            || {
                let text = std::fs::read(&log).unwrap_or_default();
                port = String::from_utf8_lossy(text.get(offset..).unwrap_or_default())
                    .lines()
                    .find_map(|line| {
                        line.split_once(":127.0.0.1: listening on port ")
                            .map(|(_, port)| port.trim().to_string())
                    })
                    .and_then(|port| port.parse::<u16>().ok());
                port.is_some()
            },
        );
        self.port = port.unwrap_or_default();
        let port = self.port;
        wait_until(
            &format!("{} to accept on {port}", self.name),
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }
}

/// Logs of the code under test, shown for failing tests (RUST_LOG selects, default info).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// The real daemon (`daemon::run`) with a real NB ovsdb-server and a sled store in a temporary
/// directory, serving gRPC on a loopback port the kernel chose (`endpoint`); stopped when dropped.
pub struct TestDaemon {
    pub nb: OvsdbServer,
    pub endpoint: String,
    /// The daemon also listens here, as it does by default for CNI plugins and vipctl.
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        TestDaemon::start_with(false).await
    }

    /// `quiet`: no debug logging in the NB server (benchmarks).
    pub async fn start_with(quiet: bool) -> TestDaemon {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let nb = if quiet {
            OvsdbServer::nb_quiet(dir.path())
        } else {
            OvsdbServer::nb(dir.path())
        };
        let socket = dir.path().join("run").join("ovn-vipd.sock");
        let mut daemon = TestDaemon {
            nb,
            endpoint: String::new(),
            socket,
            dir,
            shutdown: tokio_util::sync::CancellationToken::new(),
            task: None,
        };
        daemon.run_daemon().await;
        daemon
    }

    /// Runs `daemon::run` on this store, NB and socket, with gRPC on `tcp:127.0.0.1:0`; sets
    /// `endpoint` to the port the daemon reports once bound, and returns when it serves there.
    async fn run_daemon(&mut self) {
        let mut config = ovn_vipd::daemon::DaemonConfig::new(
            ovn_vipd::ovsdb::Remote::parse_list(&self.nb.unix_remote()).expect("remote"),
            self.dir.path().join("data"),
            vec![
                ovn_vipd::api::Listen::Tcp(([127, 0, 0, 1], 0).into()),
                ovn_vipd::api::Listen::Unix(self.socket.clone()),
            ],
        );
        let mut bound = report_grpc_bound(&mut config);
        self.shutdown = tokio_util::sync::CancellationToken::new();
        let stop = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            if let Err(error) = ovn_vipd::daemon::run(config, stop).await {
                panic!("daemon failed: {error}");
            }
        }));
        self.endpoint = format!("http://127.0.0.1:{}", bound_port(&mut bound).await);
        // Bound means accepting: this connects at once.
        tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("the daemon serves gRPC where it said it bound");
    }

    /// Adds a logical router port to `switch` (made by the daemon for its subnet), so a switch_lb_vip
    /// there can be answered for (Ready).
    pub fn attach_router(&self, switch: &str, router_port_mac: &str, network: &str) {
        wait_until(&format!("the switch {switch} in NB"), Duration::from_secs(10), || {
            !self
                .nb
                .nbctl(&["--if-exists", "get", "logical_switch", switch, "name"])
                .trim()
                .is_empty()
        });
        let router = format!("router-{switch}");
        self.nb.nbctl(&[
            "--may-exist",
            "lr-add",
            "router",
            "--",
            "lrp-add",
            "router",
            &router,
            router_port_mac,
            network,
        ]);
        let port = format!("{switch}-router");
        self.nb.nbctl(&[
            "lsp-add",
            switch,
            &port,
            "--",
            "lsp-set-type",
            &port,
            "router",
            "--",
            "lsp-set-addresses",
            &port,
            "router",
            "--",
            "lsp-set-options",
            &port,
            &format!("router-port={router}"),
        ]);
    }

    /// A barrier after NB changes: adds to `switch` (a switch that exists) a port named `marker`
    /// marked as the daemon's, owned by a VIP `marker` that does not exist, and waits until the
    /// daemon has collected it (an incremental pass for that owner). NB sends updates in order,
    /// so once it is gone the daemon has handled every NB change made before it. Costs two NB
    /// transactions (the marker's creation and its removal).
    pub async fn nb_barrier(&self, switch: &str, marker: &str) {
        let ids = format!("external_ids={{vendor=ovn-vipd,\"ovn-vipd/owner\"=\"vip/{marker}\"}}");
        self.nb.nbctl(&[
            "lsp-add",
            switch,
            marker,
            "--",
            "set",
            "logical_switch_port",
            marker,
            &ids,
        ]);
        let nb = &self.nb;
        wait_until_async(
            &format!("the marker {marker} collected"),
            Duration::from_secs(10),
            || {
                nb.nbctl(&["--if-exists", "get", "logical_switch_port", marker, "name"])
                    .trim()
                    .is_empty()
            },
        )
        .await;
    }

    /// A client of each service on a new channel.
    pub async fn clients(&self) -> requests::Clients {
        requests::Clients::new(self.channel().await)
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// Stops the daemon but keeps its NB server and directory (to look at what it left).
    pub async fn stop_daemon_only(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task");
        }
    }

    /// Starts the daemon again on the same store, NB and socket after
    /// [`TestDaemon::stop_daemon_only`] (a daemon restart as an operator does it). Its TCP port is
    /// a new one (`endpoint` changes): channels made before point at the old port, make new ones.
    pub async fn restart_daemon_only(&mut self) {
        assert!(self.task.is_none(), "the daemon is running");
        self.run_daemon().await;
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task");
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// ovn-northd between an NB and an SB server, stopped by PID when dropped.
pub struct Northd {
    child: Child,
}

impl Northd {
    pub fn start(dir: &Path, nb: &OvsdbServer, sb: &OvsdbServer) -> Northd {
        let child = Command::new("ovn-northd")
            .arg(format!("--ovnnb-db={}", nb.unix_remote()))
            .arg(format!("--ovnsb-db={}", sb.unix_remote()))
            .arg(format!("--unixctl={}", dir.join("northd.ctl").display()))
            .arg(format!("--log-file={}", dir.join("northd.log").display()))
            .arg("--no-chdir")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ovn-northd (package ovn-central)");
        Northd { child }
    }
}

impl Drop for Northd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CreateSubnet request; empty CIDRs are left out.
pub fn subnet_request(name: &str, cidr_v4: &str, cidr_v6: &str) -> ovn_vipd::api::proto::v1::CreateSubnetRequest {
    use ovn_vipd::api::proto::v1 as pb;
    pb::CreateSubnetRequest {
        subnet: Some(pb::Subnet {
            name: name.into(),
            cidr_v4: cidr_v4.into(),
            cidr_v6: cidr_v6.into(),
            ..Default::default()
        }),
    }
}
