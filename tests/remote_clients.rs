//! The clients on another host: `ovn-vipd-cni` and `vipctl` reach the real daemon (the binary,
//! as a service runs it) over TCP with mTLS, take a list of daemons and skip a dead one, move to
//! the daemon a standby names on UNAVAILABLE, and name the key or flag that is wrong. The daemon
//! refuses a client without a certificate of its CA.
//!
//! The one fake here is `FakeStandby`: a gRPC server answering every PodService call with
//! UNAVAILABLE (and, if told, the active daemon's address in `ovn-vipd-active` metadata), as a
//! standby daemon does; this branch's daemon has no standby mode to produce that answer.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{daemon_args_on, start, DaemonProcess};
use common::{issue_certificates, reserve_port, OvsdbServer, ReservedPort, TlsPaths};
use ovn_vipd::api::proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The daemon binary with a TCP listener on 127.0.0.1 that wants TLS and a client certificate
/// of `tls`'s CA; its certificate names 127.0.0.1 (an IP SAN).
struct Secured {
    _dir: tempfile::TempDir,
    _nb: OvsdbServer,
    daemon: Option<DaemonProcess>,
    args: Vec<String>,
    port: u16,
    /// Held for the test: `restart_after` brings the daemon back on the same port.
    _port: ReservedPort,
    dir: std::path::PathBuf,
    client: TlsPaths,
    rogue: TlsPaths,
    server: TlsPaths,
}

fn secured_daemon() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let issued = issue_certificates(dir.path(), "good", &["127.0.0.1", "node-1"]);
    let rogue = issue_certificates(dir.path(), "rogue", &["node-1"]).remove(0);
    let reserved = reserve_port();
    let port = reserved.port;
    let mut args = daemon_args_on(dir.path(), &nb.unix_remote(), port);
    args.extend([
        format!("--listen=unix:{}", dir.path().join("run/api.sock").display()),
        format!("--tls-certificate={}", issued[0].certificate.display()),
        format!("--tls-private-key={}", issued[0].private_key.display()),
        format!("--tls-client-ca={}", issued[0].ca_certificate.display()),
    ]);
    let daemon = start(dir.path(), &args, &[]);
    daemon.wait_for_log("gRPC listening", Duration::from_secs(20));
    common::wait_until("the TCP listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Secured {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        _nb: nb,
        daemon: Some(daemon),
        args,
        port,
        _port: reserved,
        client: issued[1].clone(),
        rogue,
        server: issued[0].clone(),
    }
}

impl Secured {
    /// SIGKILL, then the same daemon (store, port, certificates) again after `pause`.
    fn restart_after(&mut self, pause: Duration) {
        self.daemon.take();
        // Kept: the outage itself (the daemon is down for `pause`) is what the caller tests.
        std::thread::sleep(pause);
        let daemon = start(&self.dir, &self.args, &[]);
        daemon.wait_for_log("gRPC listening", Duration::from_secs(20));
        self.daemon = Some(daemon);
    }

    fn settings(&self, addresses: &str, failover: Duration) -> ovn_vipd::client::Settings {
        ovn_vipd::client::Settings {
            addresses: ovn_vipd::client::Address::parse_list(addresses).unwrap(),
            tls: ovn_vipd::client::TlsFiles {
                ca_certificate: Some(self.client.ca_certificate.clone()),
                certificate: Some(self.client.certificate.clone()),
                private_key: Some(self.client.private_key.clone()),
                server_name: None,
            },
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            failover_timeout: failover,
        }
    }
}

/// A port nothing listens on: held (not bound) for as long as the value lives, so no other
/// test's server can appear there.
fn dead_port() -> ReservedPort {
    reserve_port()
}

/// Runs vipctl with `args` and `env` (nothing of the test's own VIPCTL_* environment):
/// (success, stdout, stderr).
fn vipctl(args: &[&str], env: &[(&str, String)], stdin: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vipctl"));
    for (key, _) in std::env::vars() {
        if key.starts_with("VIPCTL_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vipctl");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("vipctl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tls_flags(ca: &Path, identity: Option<&TlsPaths>) -> Vec<String> {
    let mut flags = vec![format!("--tls-ca-cert={}", ca.display())];
    if let Some(identity) = identity {
        flags.push(format!("--tls-certificate={}", identity.certificate.display()));
        flags.push(format!("--tls-private-key={}", identity.private_key.display()));
    }
    flags
}

/// The plugin's CHECK of pod `default/<pod>` (in the test's own network namespace, which
/// exists): it reads the pod from the daemon first, so the answer says whether it got there.
fn cni_check(conf: &serde_json::Value, pod: &str) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovn-vipd-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", "CHECK")
        .env("CNI_CONTAINERID", "remote1")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ovn-vipd-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("ovn-vipd-cni");
    assert!(!output.status.success(), "CHECK of an unknown pod succeeded");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stdout)))
}

fn conf(server: &str, tls: &[(&str, &Path)], extra: serde_json::Value) -> serde_json::Value {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "ovn-vipd",
        "type": "ovn-vipd-cni",
        "subnet": "ovn-default",
        "server": server,
        "failoverTimeout": 0,
        "connectTimeout": 2,
    });
    for (key, path) in tls {
        conf[*key] = path.display().to_string().into();
    }
    if let serde_json::Value::Object(extra) = extra {
        for (key, value) in extra {
            conf[key] = value;
        }
    }
    conf
}

/// The plugin reached the daemon and the daemon answered: "no pod".
fn reached(answer: &serde_json::Value) -> bool {
    answer["code"] == 102
        && answer["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("ovn-vipd has no pod"))
}

#[test]
fn the_plugin_reaches_the_daemon_over_tcp_with_mtls_and_a_client_without_a_certificate_is_refused() {
    let daemon = secured_daemon();
    let tcp = format!("tcp:127.0.0.1:{}", daemon.port);
    let mtls = [
        ("tlsCaCert", daemon.client.ca_certificate.as_path()),
        ("tlsCertificate", daemon.client.certificate.as_path()),
        ("tlsPrivateKey", daemon.client.private_key.as_path()),
    ];
    let answer = cni_check(&conf(&tcp, &mtls, serde_json::json!({})), "ghost");
    assert!(reached(&answer), "{answer}");

    // TLS without a client certificate, a certificate of another CA, plain text: refused by the
    // daemon, and the plugin says try again later (the daemon did not answer the request).
    let rogue = [
        ("tlsCaCert", daemon.client.ca_certificate.as_path()),
        ("tlsCertificate", daemon.rogue.certificate.as_path()),
        ("tlsPrivateKey", daemon.rogue.private_key.as_path()),
    ];
    for (what, conf) in [
        ("no client certificate", conf(&tcp, &mtls[..1], serde_json::json!({}))),
        ("another CA's certificate", conf(&tcp, &rogue, serde_json::json!({}))),
        ("plain text", conf(&tcp, &[], serde_json::json!({}))),
    ] {
        let answer = cni_check(&conf, "ghost");
        assert!(!reached(&answer), "{what}: served: {answer}");
        assert_eq!(answer["code"], 11, "{what}: {answer}");
        assert!(
            answer["msg"].as_str().unwrap().contains("transport error"),
            "{what}: {answer}"
        );
    }

    // A daemon certificate the CA did not sign is refused by the plugin.
    let other_ca = issue_certificates(&daemon.dir, "other", &["x"]).remove(0);
    let answer = cni_check(
        &conf(
            &tcp,
            &[
                ("tlsCaCert", other_ca.ca_certificate.as_path()),
                ("tlsCertificate", daemon.client.certificate.as_path()),
                ("tlsPrivateKey", daemon.client.private_key.as_path()),
            ],
            serde_json::json!({}),
        ),
        "ghost",
    );
    assert_eq!(answer["code"], 11, "{answer}");
    assert!(answer["details"].to_string().contains("certificate"), "{answer}");

    // A list whose first daemon is dead: the next one is used.
    let dead = dead_port();
    let list = format!("tcp:127.0.0.1:{},{tcp}", dead.port);
    let answer = cni_check(&conf(&list, &mtls, serde_json::json!({})), "ghost");
    assert!(reached(&answer), "{answer}");
    // Nobody answers: try again later, naming every address.
    let (first, second) = (dead_port(), dead_port());
    let (first, second) = (first.port, second.port);
    let nobody = format!("tcp:127.0.0.1:{first},unix:/nonexistent/ovn-vipd.sock,tcp:127.0.0.1:{second}");
    let answer = cni_check(&conf(&nobody, &mtls, serde_json::json!({})), "ghost");
    assert_eq!(answer["code"], 11, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("(\"server\")"), "{answer}");
    for address in [format!("tcp:127.0.0.1:{first}"), format!("tcp:127.0.0.1:{second}")] {
        assert!(answer["msg"].as_str().unwrap().contains(&address), "{answer}");
        assert!(answer["details"].as_str().unwrap().contains(&address), "{answer}");
    }
}

#[test]
fn bad_connection_keys_are_invalid_configuration_naming_the_key() {
    let daemon = secured_daemon();
    let tcp = format!("tcp:127.0.0.1:{}", daemon.port);
    let ca = daemon.client.ca_certificate.as_path();
    let absent = Path::new("/nonexistent/ca.pem");
    let not_a_key = daemon.client.certificate.as_path();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (conf("ssl:127.0.0.1:1", &[], serde_json::json!({})), "\"server\""),
        (conf("tcp:127.0.0.1", &[], serde_json::json!({})), "\"server\""),
        (
            conf(&tcp, &[("tlsCaCert", absent)], serde_json::json!({})),
            "\"tlsCaCert\"",
        ),
        (
            conf(
                &tcp,
                &[
                    ("tlsCaCert", ca),
                    ("tlsCertificate", daemon.client.certificate.as_path()),
                ],
                serde_json::json!({}),
            ),
            "\"tlsPrivateKey\"",
        ),
        (
            conf(
                &tcp,
                &[
                    ("tlsCaCert", ca),
                    ("tlsCertificate", daemon.client.certificate.as_path()),
                    ("tlsPrivateKey", not_a_key),
                ],
                serde_json::json!({}),
            ),
            "\"tlsPrivateKey\"",
        ),
        (
            conf(&tcp, &[], serde_json::json!({"connectTimeout": "5s"})),
            "\"connectTimeout\"",
        ),
        (
            conf(&tcp, &[], serde_json::json!({"serverSocket": "/run/x.sock"})),
            "\"serverSocket\"",
        ),
    ];
    for (conf, key) in cases {
        let answer = cni_check(&conf, "ghost");
        assert_eq!(answer["code"], 7, "{conf}: {answer}");
        assert!(answer["msg"].as_str().unwrap().contains(key), "{conf}: {answer}");
    }
    // The older key alone still names a unix socket (here, the daemon's).
    let old = serde_json::json!({
        "cniVersion": "1.0.0", "name": "n", "type": "ovn-vipd-cni", "subnet": "s",
        "serverSocket": daemon.dir.join("run/api.sock"),
    });
    let answer = cni_check(&old, "ghost");
    assert!(reached(&answer), "{answer}");
}

const MANIFESTS: &str = "apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: ovn-default
spec:
  cidrBlock: 10.16.0.0/24
---
apiVersion: kubeovn.io/v1
kind: Vip
metadata:
  name: remote-vip
spec:
  subnet: ovn-default
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: default
";

#[test]
fn vipctl_reaches_the_daemon_over_tcp_with_mtls_by_flags_and_environment() {
    let daemon = secured_daemon();
    let tcp = format!("tcp:127.0.0.1:{}", daemon.port);
    let dead = dead_port();
    let list = format!("tcp:127.0.0.1:{},{tcp}", dead.port);
    let flags = tls_flags(&daemon.client.ca_certificate, Some(&daemon.client));
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend(["--server".to_string(), list.clone()]);
        all.extend(flags.iter().cloned());
        all
    };
    let run = |args: Vec<String>, stdin: Option<&str>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vipctl(&args, &[], stdin)
    };
    let (ok, out, err) = run(with(&["apply", "-f", "-"]), Some(MANIFESTS));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("vip/remote-vip created") && out.contains("pod/web-0 bound"),
        "{out}"
    );

    // The same through the environment.
    let env = [
        ("VIPCTL_SERVER", list.clone()),
        ("VIPCTL_TLS_CA_CERT", daemon.client.ca_certificate.display().to_string()),
        (
            "VIPCTL_TLS_CERTIFICATE",
            daemon.client.certificate.display().to_string(),
        ),
        (
            "VIPCTL_TLS_PRIVATE_KEY",
            daemon.client.private_key.display().to_string(),
        ),
        ("VIPCTL_CONNECT_TIMEOUT", "2".to_string()),
    ];
    let (ok, out, err) = vipctl(&["get", "vip"], &env, None);
    assert!(ok && out.contains("remote-vip"), "{out}{err}");

    // No client certificate: the daemon refuses; a bad flag is named; an unreachable list says so.
    let mut args = vec![
        "get".to_string(),
        "vip".to_string(),
        "--server".to_string(),
        tcp.clone(),
    ];
    args.extend(tls_flags(&daemon.client.ca_certificate, None));
    let (ok, out, err) = run(args, None);
    assert!(
        !ok && !out.contains("remote-vip") && err.contains("cannot connect"),
        "served without a certificate: {out}{err}"
    );
    let (ok, _, err) = vipctl(
        &["get", "vip", "--server", &tcp, "--tls-ca-cert", "/nonexistent/ca.pem"],
        &[],
        None,
    );
    assert!(
        !ok && err.contains("--tls-ca-cert: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
    let (ok, _, err) = vipctl(&["get", "vip", "--server", "tcp:10.0.0.1"], &[], None);
    assert!(!ok && err.contains("--server: "), "{err}");
    let dead_reserved = dead_port();
    let dead = format!("tcp:127.0.0.1:{}", dead_reserved.port);
    let (ok, _, err) = vipctl(&["get", "vip", "--server", &dead], &[], None);
    assert!(!ok && err.contains("cannot connect") && err.contains(&dead), "{err}");
}

/// A standby as the clustered daemon has it: every PodService call is UNAVAILABLE, naming the
/// active daemon in `ovn-vipd-active` when it knows one. A fake: this branch's daemon has no
/// standby mode.
#[derive(Clone)]
struct FakeStandby {
    active: Option<String>,
}

impl FakeStandby {
    fn refuse<T>(&self) -> Result<Response<T>, Status> {
        let mut status = Status::unavailable("this daemon is a standby");
        if let Some(active) = &self.active {
            status
                .metadata_mut()
                .insert("ovn-vipd-active", active.parse().expect("ascii metadata"));
        }
        Err(status)
    }
}

#[tonic::async_trait]
impl pb::pod_service_server::PodService for FakeStandby {
    async fn bind_pod(&self, _: Request<pb::BindPodRequest>) -> Result<Response<pb::Pod>, Status> {
        self.refuse()
    }
    async fn unbind_pod(&self, _: Request<pb::UnbindPodRequest>) -> Result<Response<pb::UnbindPodResponse>, Status> {
        self.refuse()
    }
    async fn get_pod(&self, _: Request<pb::GetPodRequest>) -> Result<Response<pb::Pod>, Status> {
        self.refuse()
    }
    async fn list_pods(&self, _: Request<pb::ListPodsRequest>) -> Result<Response<pb::ListPodsResponse>, Status> {
        self.refuse()
    }
    type WatchPodsStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PodEvent, Status>> + Send>>;
    async fn watch_pods(&self, _: Request<pb::WatchRequest>) -> Result<Response<Self::WatchPodsStream>, Status> {
        self.refuse()
    }
}

/// Serves a [`FakeStandby`] with the daemon's certificate on a free port of 127.0.0.1.
fn fake_standby(runtime: &tokio::runtime::Runtime, server: &TlsPaths, active: Option<String>) -> u16 {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    // The test serves it: bound here, handed to the server, never released in between.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the fake standby");
    let port = listener.local_addr().unwrap().port();
    let identity = Identity::from_pem(
        std::fs::read(&server.certificate).unwrap(),
        std::fs::read(&server.private_key).unwrap(),
    );
    let service = pb::pod_service_server::PodServiceServer::new(FakeStandby { active });
    let router = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(service);
    runtime.spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    port
}

#[test]
fn unavailable_moves_to_the_daemon_the_standby_names_or_to_the_next_address() {
    let daemon = secured_daemon();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tcp = format!("tcp:127.0.0.1:{}", daemon.port);
    let naming = fake_standby(&runtime, &daemon.server, Some(tcp.clone()));
    let silent = fake_standby(&runtime, &daemon.server, None);
    let mtls = [
        ("tlsCaCert", daemon.client.ca_certificate.as_path()),
        ("tlsCertificate", daemon.client.certificate.as_path()),
        ("tlsPrivateKey", daemon.client.private_key.as_path()),
    ];
    let failover = serde_json::json!({"failoverTimeout": 10});

    // Only the standby is listed; it names the active daemon, which answers.
    let answer = cni_check(
        &conf(&format!("tcp:127.0.0.1:{naming}"), &mtls, failover.clone()),
        "ghost",
    );
    assert!(reached(&answer), "{answer}");
    // A standby that names nobody: the next address of the list.
    let answer = cni_check(
        &conf(&format!("tcp:127.0.0.1:{silent},{tcp}"), &mtls, failover.clone()),
        "ghost",
    );
    assert!(reached(&answer), "{answer}");
    // Without failover time the standby's answer is final: try again later.
    let answer = cni_check(
        &conf(&format!("tcp:127.0.0.1:{naming}"), &mtls, serde_json::json!({})),
        "ghost",
    );
    assert_eq!(answer["code"], 11, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("standby"), "{answer}");
    // Only standbys naming nobody: UNAVAILABLE until the deadline, then try again later.
    let started = std::time::Instant::now();
    let answer = cni_check(
        &conf(
            &format!("tcp:127.0.0.1:{silent}"),
            &mtls,
            serde_json::json!({"failoverTimeout": 2}),
        ),
        "ghost",
    );
    assert_eq!(answer["code"], 11, "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // vipctl: a change sent to the standby lands on the active daemon.
    let mut flags = tls_flags(&daemon.client.ca_certificate, Some(&daemon.client));
    flags.extend(["--server".to_string(), tcp.clone()]);
    let mut args: Vec<String> = vec!["apply".into(), "-f".into(), "-".into()];
    args.extend(flags.iter().cloned());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = vipctl(&args_ref, &[], Some(MANIFESTS));
    assert!(ok, "{out}{err}");
    let mut args: Vec<String> = vec!["delete".into(), "pod".into(), "web-0".into()];
    args.extend(tls_flags(&daemon.client.ca_certificate, Some(&daemon.client)));
    args.extend(["--server".to_string(), format!("tcp:127.0.0.1:{naming}")]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = vipctl(&args_ref, &[], None);
    assert!(ok && out.contains("pod/web-0 unbound"), "{out}{err}");
}

/// The daemon goes away under a connected client (SIGKILL) and comes back 1.5 s later on the
/// same address: a change sent meanwhile is retried until it lands, within the failover time;
/// without failover time it fails at once as UNAVAILABLE.
#[test]
fn a_change_is_retried_through_a_daemon_restart_until_the_failover_deadline() {
    use ovn_vipd::client::Daemons;
    let mut daemon = secured_daemon();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tcp = format!("tcp:127.0.0.1:{}", daemon.port);
    let send = |channel, request: pb::CreateSubnetRequest| async move {
        pb::subnet_service_client::SubnetServiceClient::new(channel)
            .create_subnet(request)
            .await
    };
    let mut patient = runtime
        .block_on(Daemons::connect(daemon.settings(&tcp, Duration::from_secs(20))))
        .expect("connect");
    let mut hasty = runtime
        .block_on(Daemons::connect(daemon.settings(&tcp, Duration::ZERO)))
        .expect("connect");
    runtime
        .block_on(patient.call(common::subnet_request("before", "10.40.0.0/24", ""), send))
        .expect("served before the restart");

    let port = daemon.port;
    let restarted = std::thread::scope(|scope| {
        let restart = scope.spawn(|| daemon.restart_after(Duration::from_millis(1500)));
        // The SIGKILL first: the port refuses connections (it stays so for the 1.5 s pause).
        common::wait_until("the daemon killed", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        let refused = runtime.block_on(hasty.call(common::subnet_request("hasty", "10.41.0.0/24", ""), send));
        assert_eq!(
            refused.map_err(|status| status.code()).err(),
            Some(tonic::Code::Unavailable)
        );
        let started = std::time::Instant::now();
        let answer = runtime.block_on(patient.call(common::subnet_request("after", "10.42.0.0/24", ""), send));
        restart.join().unwrap();
        (answer, started.elapsed())
    });
    let (answer, took) = restarted;
    assert_eq!(answer.expect("created after the restart").name, "after");
    assert!(
        took >= Duration::from_millis(500),
        "answered in {took:?}: was the daemon down at all?"
    );
}

/// A daemon that stops answering mid-session (SIGSTOP: it accepts nothing, as a host cut off):
/// the call that timed out on it is not retried (it may have arrived), but the next call of the
/// same client moves to the other daemon of its list instead of timing out on the same one
/// again.
#[test]
fn after_a_request_timed_out_the_next_call_starts_on_another_daemon() {
    use ovn_vipd::client::{Address, Daemons, Settings, TlsFiles};
    use pb::subnet_service_client::SubnetServiceClient;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let (nb_a, nb_b) = (OvsdbServer::nb(&dir_a), OvsdbServer::nb(&dir_b));
    let a = start(&dir_a, &common::process::daemon_args(&dir_a, &nb_a.tcp_remote()), &[]);
    let b = start(&dir_b, &common::process::daemon_args(&dir_b, &nb_b.tcp_remote()), &[]);
    let list = format!("tcp:127.0.0.1:{},tcp:127.0.0.1:{}", a.grpc_port(), b.grpc_port());
    let settings = Settings {
        addresses: Address::parse_list(&list).unwrap(),
        tls: TlsFiles::default(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        failover_timeout: Duration::from_secs(5),
    };
    let send = |channel, request| async move { SubnetServiceClient::new(channel).create_subnet(request).await };
    let mut daemons = runtime.block_on(Daemons::connect(settings)).expect("connect");
    assert_eq!(
        daemons.current().to_string(),
        format!("tcp:127.0.0.1:{}", a.grpc_port())
    );
    runtime
        .block_on(daemons.call(common::subnet_request("first", "10.41.0.0/24", ""), send))
        .expect("served by a");
    a.signal("STOP");
    let timed_out = runtime.block_on(daemons.call(common::subnet_request("second", "10.42.0.0/24", ""), send));
    assert!(timed_out.is_err(), "a stopped daemon cannot answer: {timed_out:?}");
    let third = runtime.block_on(daemons.call(common::subnet_request("third", "10.43.0.0/24", ""), send));
    a.signal("CONT");
    third.expect("the next call is served by b");
    assert_eq!(
        daemons.current().to_string(),
        format!("tcp:127.0.0.1:{}", b.grpc_port())
    );
}
