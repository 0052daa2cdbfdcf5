//! The one test harness: real `ovsdb-server` processes with the real OVN NB schema, started as
//! children of the test (so each is stopped by its PID when the test ends, pass or fail), in a
//! temporary directory of their own.
#![allow(dead_code)]

pub mod central;
pub mod chassis;
pub mod ovn;
pub mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
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
    pub port: u16,
    /// `tcp` or `ssl`.
    pub tcp_kind: &'static str,
    pub tls: Option<TlsPaths>,
    /// Debug logging records every request in full: tests read it, benchmarks must not pay it.
    pub debug_log: bool,
    /// The database `cluster/status` asks about (a clustered member's).
    pub database: String,
    child: Option<Child>,
}

impl OvsdbServer {
    /// Creates a standalone database from `schema` in `dir` and starts serving it.
    pub fn standalone(dir: &Path, name: &str, schema: &Path) -> OvsdbServer {
        let db_path = dir.join(format!("{name}.db"));
        run("ovsdb-tool", &["create", path_str(&db_path), path_str(schema)]);
        let mut server = OvsdbServer::new(dir, name, db_path, free_port(), None);
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
        let mut server = OvsdbServer::new(dir, "nb", db_path, free_port(), None);
        server.debug_log = false;
        server.start();
        server
    }

    /// A standalone NB database served over `pssl:` (and the unix socket).
    pub fn nb_ssl(dir: &Path, tls: TlsPaths) -> OvsdbServer {
        let db_path = dir.join("nb.db");
        run("ovsdb-tool", &["create", path_str(&db_path), NB_SCHEMA]);
        let mut server = OvsdbServer::new(dir, "nb", db_path, free_port(), Some(tls));
        server.start();
        server
    }

    pub fn new(dir: &Path, name: &str, db_path: PathBuf, port: u16, tls: Option<TlsPaths>) -> OvsdbServer {
        OvsdbServer {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            socket: dir.join(format!("{name}.sock")),
            db_path,
            port,
            tcp_kind: if tls.is_some() { "ssl" } else { "tcp" },
            tls,
            debug_log: true,
            database: "OVN_Northbound".into(),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.start_no_wait();
        let socket = self.socket.clone();
        let port = self.port;
        wait_until(&format!("{} to listen", self.name), Duration::from_secs(10), || {
            socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
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
}

impl NbCluster {
    pub fn start(dir: &Path) -> NbCluster {
        NbCluster::start_schema(dir, NB_SCHEMA, "OVN_Northbound", "nb")
    }

    /// A 3-member RAFT cluster of any schema (e.g. `deploy/ovn-vipd.ovsschema`, database
    /// `OVN_VIPD`); members are named `<prefix>1..3`.
    pub fn start_schema(dir: &Path, schema: &str, database: &str, prefix: &str) -> NbCluster {
        let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
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
            let mut member = OvsdbServer::new(dir, &name, db_path, free_port(), None);
            member.database = database.to_string();
            members.push(member);
        }
        // The joining members wait for the first, so start them all before waiting on any.
        for member in &mut members {
            member.start_no_wait();
        }
        for member in &members {
            member.wait_listening();
        }
        let cluster = NbCluster { members };
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

    fn wait_listening(&self) {
        let port = self.port;
        wait_until(&format!("{} to listen", self.name), Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
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
/// directory, serving gRPC on a free loopback port; stopped when dropped.
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
        let port = free_port();
        let socket = dir.path().join("run").join("ovn-vipd.sock");
        let config = ovn_vipd::daemon::DaemonConfig::new(
            ovn_vipd::ovsdb::Remote::parse_list(&nb.unix_remote()).expect("remote"),
            dir.path().join("data"),
            vec![
                ovn_vipd::api::Listen::Tcp(([127, 0, 0, 1], port).into()),
                ovn_vipd::api::Listen::Unix(socket.clone()),
            ],
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = ovn_vipd::daemon::run(config, stop).await {
                panic!("daemon failed: {error}");
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the daemon never served gRPC");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TestDaemon {
            nb,
            endpoint,
            socket,
            dir,
            shutdown,
            task: Some(task),
        }
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

    /// Starts the daemon again on the same store, NB, port and socket after
    /// [`TestDaemon::stop_daemon_only`] (a daemon restart as an operator does it).
    pub async fn restart_daemon_only(&mut self) {
        assert!(self.task.is_none(), "the daemon is running");
        let port: u16 = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port of the endpoint");
        let config = ovn_vipd::daemon::DaemonConfig::new(
            ovn_vipd::ovsdb::Remote::parse_list(&self.nb.unix_remote()).expect("remote"),
            self.dir.path().join("data"),
            vec![
                ovn_vipd::api::Listen::Tcp(([127, 0, 0, 1], port).into()),
                ovn_vipd::api::Listen::Unix(self.socket.clone()),
            ],
        );
        self.shutdown = tokio_util::sync::CancellationToken::new();
        let stop = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            if let Err(error) = ovn_vipd::daemon::run(config, stop).await {
                panic!("daemon failed: {error}");
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the daemon never served gRPC again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
