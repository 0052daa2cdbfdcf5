//! The daemon run like a service: the `ovn-vipd` binary as a child process, configured by flags,
//! environment and file; systemd's notify protocol on a real datagram socket; TLS and client
//! certificates on gRPC; Prometheus metrics; JSON logs; `ovn-vipd check`; the systemd unit through
//! `systemd-analyze verify`; and docker-compose.yml's command lines run locally.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{
    create_subnet_and_vip, daemon_args, http_get, plain_channel, run_binary, sample, start, wait_ready, BINARY,
};
use common::{issue_certificates, reserve_port, run, wait_until, OvsdbServer, NB_SCHEMA};
use ovn_vipd::api::proto::v1 as pb;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const SECOND: Duration = Duration::from_secs(1);

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ovn-vipd.toml");
    std::fs::write(
        &file,
        "data-dir = \"/from/file\"\nresync-interval = 7\nshutdown-grace = 3\nlog-format = \"json\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_binary(
        &["config", "--shutdown-grace", "5"],
        &[
            ("OVN_VIPD_CONFIG", path(&file)),
            ("OVN_VIPD_RESYNC_INTERVAL", "9"),
            ("OVN_VIPD_SHUTDOWN_GRACE", "4"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{stdout}"))
            .to_string()
    };
    assert_eq!(line("shutdown-grace"), "shutdown-grace = 5  # flag");
    assert_eq!(
        line("resync-interval"),
        "resync-interval = 9  # environment OVN_VIPD_RESYNC_INTERVAL"
    );
    assert_eq!(
        line("data-dir"),
        format!("data-dir = \"/from/file\"  # file {}", file.display())
    );
    assert_eq!(
        line("log-format"),
        format!("log-format = \"json\"  # file {}", file.display())
    );
    assert_eq!(
        line("ovn-nb"),
        "ovn-nb = \"unix:/var/run/ovn/ovnnb_db.sock\"  # default"
    );
    assert!(line("data-dir").contains("/from/file"));
    // The shipped example file is valid and changes nothing.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ovn-vipd.toml");
    let (code, stdout, stderr) = run_binary(&["config", "--config", path(&example)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("data-dir = \"/var/lib/ovn-vipd\"  # default"),
        "{stdout}"
    );
}

#[test]
fn a_bad_setting_stops_start_up_with_exit_64_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "data_dir = \"/x\"\n").unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "listen = [\"tcp:127.0.0.1:1\"\n").unwrap();
    let missing = dir.path().join("missing.toml");
    // (flags, environment, what the error must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--listen", "tcp:0.0.0.0:50051"],
            vec![],
            "setting listen (from flag)",
        ),
        (vec!["--listen", "udp:1"], vec![], "setting listen (from flag)"),
        (
            vec![],
            vec![("OVN_VIPD_RESYNC_INTERVAL", "0")],
            "setting resync-interval (from environment OVN_VIPD_RESYNC_INTERVAL)",
        ),
        (vec!["--ovn-nb", "bogus:1"], vec![], "setting ovn-nb (from flag)"),
        (vec!["--ovn-nb", "ssl:127.0.0.1:6641"], vec![], "setting ovn-nb"),
        (vec!["--config", path(&missing)], vec![], "config file"),
        (vec!["--config", path(&unknown)], vec![], "unknown setting \"data_dir\""),
        (vec!["--config", path(&broken)], vec![], "config file"),
        (
            vec!["--tls-certificate", "/nonexistent.pem"],
            vec![],
            "setting tls-certificate",
        ),
        (
            vec![
                "--tls-certificate",
                "/etc/hostname",
                "--tls-private-key",
                "/etc/hostname",
            ],
            vec![],
            "does not hold a PEM certificate",
        ),
        (
            vec!["--socket-group", "no-such-group-here"],
            vec![],
            "setting socket-group",
        ),
        (vec!["--log-format", "xml"], vec![], "setting log-format"),
        (vec!["--log", "info,[bad"], vec![], "setting log"),
        (vec!["--metrics-listen", "nowhere"], vec![], "setting metrics-listen"),
        (vec!["--insecure=maybe"], vec![], "setting insecure"),
    ];
    for (args, env, expected) in cases {
        let mut all = args.clone();
        all.extend(["--data-dir", path(dir.path())]);
        let (code, _, stderr) = run_binary(&all, &env);
        assert_eq!(code, 64, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        !dir.path().join("store").exists(),
        "nothing is opened before the settings are checked"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The notify socket systemd would give the daemon; collects what it is sent.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Reads messages for `duration`; every line is one `KEY=value`.
    fn collect(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(length) = self.socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                self.seen.extend(text.lines().map(str::to_string));
            }
        }
    }

    fn wait_for(&mut self, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.seen.iter().any(|seen| seen == line) {
            assert!(Instant::now() < deadline, "never received {line}; got {:?}", self.seen);
            self.collect(Duration::from_millis(100));
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|seen| *seen == line).count()
    }

    /// Reads until `line` has come `count` times in all.
    fn wait_for_count(&mut self, line: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(line) < count {
            assert!(
                Instant::now() < deadline,
                "{line} never came {count} times; got {:?}",
                self.seen
            );
            self.collect(Duration::from_millis(100));
        }
    }

    /// Reads what has been sent so far (until the socket stays empty for 100 ms).
    fn drain(&mut self) {
        let mut buffer = [0u8; 4096];
        while let Ok(length) = self.socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            self.seen.extend(text.lines().map(str::to_string));
        }
    }
}

#[test]
fn systemd_hears_ready_only_after_the_first_sync_then_keep_alives_and_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    // NB is not there yet: the daemon serves its API but is not READY.
    let db = dir.path().join("nb.db");
    run("ovsdb-tool", &["create", path(&db), NB_SCHEMA]);
    let mut nb = OvsdbServer::new(dir.path(), "nb", db, None);
    let mut notify = NotifySocket::bind(dir.path());
    let daemon = start(
        dir.path(),
        &daemon_args(dir.path(), &nb.unix_remote()),
        &[("NOTIFY_SOCKET", path(&notify.path)), ("WATCHDOG_USEC", "800000")],
    );
    let mut daemon = daemon;
    let port = daemon.grpc_port();
    // Barriers: the daemon has found NB missing several times (each failure logged), and its
    // main loop has gone round (keep-alives): READY would have been sent by now.
    wait_until("four failed NB connects", Duration::from_secs(15), || {
        daemon.stderr().matches("OVSDB connection unavailable").count() >= 4
    });
    notify.wait_for_count("WATCHDOG=1", 3, Duration::from_secs(15));
    notify.drain();
    assert_eq!(
        notify.count("READY=1"),
        0,
        "READY before any NB sync: {:?}",
        notify.seen
    );
    assert!(
        notify.count("WATCHDOG=1") >= 2,
        "keep-alives go on while NB is away: {:?}",
        notify.seen
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the API serves meanwhile"
    );

    nb.start();
    notify.wait_for("READY=1", Duration::from_secs(15));
    let keep_alives = notify.count("WATCHDOG=1");
    // "keep-alives after READY"
    notify.wait_for_count("WATCHDOG=1", keep_alives + 1, Duration::from_secs(5));

    // A stuck sync loop: NB frozen (SIGSTOP) while a change makes the loop wait on a transaction.
    // The main loop goes on, but holds back keep-alives, so systemd would restart the daemon.
    nb.signal("STOP");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = plain_channel(port).await;
        create_subnet_and_vip(&channel, "vip-during-freeze", "default").await;
    });
    // Every tick either sends a keep-alive or logs that it holds one back. Once a tick has held
    // back, every earlier keep-alive is in the socket: read them, then wait for two more
    // held-back ticks; no keep-alive may come in between.
    let held_back = || daemon.stderr().matches("holding back the watchdog keep-alive").count();
    daemon.wait_for_log("holding back the watchdog keep-alive", Duration::from_secs(5));
    notify.drain();
    let before = notify.count("WATCHDOG=1");
    let held = held_back();
    wait_until("two more held-back ticks", Duration::from_secs(5), || {
        held_back() >= held + 2
    });
    notify.drain();
    assert_eq!(
        notify.count("WATCHDOG=1"),
        before,
        "keep-alives went on while the sync loop was stuck"
    );
    nb.signal("CONT");
    // "keep-alives resume once the loop moves"
    notify.wait_for_count("WATCHDOG=1", before + 1, Duration::from_secs(15));

    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    // Sent before the process exited: already in the socket.
    notify.drain();
    assert!(notify.count("STOPPING=1") >= 1, "{:?}", notify.seen);
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/ovn-vipd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=ovn-vipd",
        "RuntimeDirectory=ovn-vipd",
        "After=network-online.target ovn-ovsdb-server-nb.service",
        "Wants=network-online.target ovn-ovsdb-server-nb.service",
        "ExecReload=/bin/sh -c 'kill -HUP \"$MAINPID\"'",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|unit_line| unit_line.starts_with(line)),
            "{line} missing"
        );
    }
    // systemd-analyze checks that ExecStart exists: point it at the binary just built, and
    // change nothing else.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ovn-vipd.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/ovn-vipd "));
    std::fs::write(
        &copy,
        unit.replace("ExecStart=/usr/local/bin/ovn-vipd ", &format!("ExecStart={BINARY} ")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", path(&copy)])
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze had remarks: {stderr}");
}

#[test]
fn sighup_rereads_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let file = dir.path().join("ovn-vipd.toml");
    std::fs::write(&file, "log = \"warn\"\n").unwrap();
    // log = warn hides the line that says which port the kernel chose: a port held for the test.
    let reserved = reserve_port();
    let port = reserved.port;
    let mut args = common::process::daemon_args_on(dir.path(), &nb.unix_remote(), port);
    args.push(format!("--config={}", file.display()));
    let daemon = start(dir.path(), &args, &[]);
    wait_until("the API", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Barrier: an answered RPC. The listener's info line is written (synchronously) before its
    // server task starts, so once a call is answered the line would be in the log if info showed.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        SubnetServiceClient::new(plain_channel(port).await)
            .list_subnets(pb::ListSubnetsRequest::default())
            .await
            .expect("an answered call")
    });
    assert!(
        !daemon.stderr().contains("gRPC listening"),
        "log = warn hides info lines: {}",
        daemon.stderr()
    );
    std::fs::write(&file, "log = \"info\"\nresync-interval = 60\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", Duration::from_secs(10));
    daemon.wait_for_log("take effect at the next restart", Duration::from_secs(10));
    assert!(daemon.stderr().contains("resync-interval"), "{}", daemon.stderr());
    // A broken file is refused and the daemon keeps running with what it has.
    std::fs::write(&file, "log = [\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration not reloaded", Duration::from_secs(10));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Logs

/// Runs the daemon with `args` on a pseudo-terminal made by script(1) (util-linux), as someone
/// starting it from a shell would, until it has logged `text`; returns everything it printed.
fn terminal_output(dir: &Path, args: &[String], env: &[(&str, &str)], text: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let typescript = dir.join(format!("terminal-{}.txt", RUNS.fetch_add(1, Ordering::Relaxed)));
    let pid_file = dir.join("terminal.pid");
    let _ = std::fs::remove_file(&pid_file);
    let quoted: Vec<String> = std::iter::once(BINARY.to_string())
        .chain(args.iter().cloned())
        .map(|arg| format!("'{arg}'"))
        .collect();
    let shell = format!("echo $$ > '{}'; exec {}", pid_file.display(), quoted.join(" "));
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--flush", "--command", &shell, path(&typescript)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NO_COLOR");
    command.envs(env.iter().copied());
    let mut script = command.spawn().expect("script (package bsdutils)");
    let read = || std::fs::read_to_string(&typescript).unwrap_or_default();
    // Polled here rather than with common::wait_until, which panics: script(1) and the daemon
    // must be stopped first, whatever happened.
    let logged = (0..750).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        read().contains(text)
    });
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    }
    let exited = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        matches!(script.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = script.kill();
        let _ = script.wait();
    }
    let output = read();
    assert!(logged, "the daemon on a terminal never printed {text:?}: {output}");
    output
}

#[test]
fn text_logs_are_plain_in_a_file_and_coloured_only_on_a_terminal_without_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let mut args = daemon_args(dir.path(), &nb.unix_remote());
    args.push("--metrics-listen=off".into());
    // stderr is a file (as under systemd's journal or docker): no escape character at all, even
    // with the terminal type of a colour terminal in the environment.
    let daemon = start(dir.path(), &args, &[("TERM", "xterm-256color")]);
    daemon.wait_for_log("gRPC listening", 15 * SECOND);
    let log_file = daemon.log.clone();
    drop(daemon);
    let log = std::fs::read(log_file).unwrap();
    assert!(!log.is_empty());
    assert!(
        !log.contains(&0x1b),
        "escape characters in a log file: {}",
        String::from_utf8_lossy(&log)
    );

    // A terminal gets colour (SGR sequences, ESC '[' ... 'm')...
    let terminal_args = |run: &str| {
        let data = dir.path().join(format!("data-{run}"));
        let mut args = daemon_args(&data, &nb.unix_remote());
        args.push("--metrics-listen=off".into());
        args
    };
    let coloured = terminal_output(dir.path(), &terminal_args("coloured"), &[], "gRPC listening");
    assert!(coloured.contains("\u{1b}["), "no colour on a terminal: {coloured:?}");
    // ... unless NO_COLOR (https://no-color.org) is set.
    let plain = terminal_output(
        dir.path(),
        &terminal_args("plain"),
        &[("NO_COLOR", "1")],
        "gRPC listening",
    );
    assert!(!plain.contains('\u{1b}'), "colour despite NO_COLOR: {plain:?}");
}

// ---------------------------------------------------------------------------------------------
// Security

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_grpc_takes_tls_and_requires_a_client_certificate_when_given_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let issued = issue_certificates(dir.path(), "good", &["localhost", "client"]);
    let (server, client) = (&issued[0], &issued[1]);
    let rogue = issue_certificates(dir.path(), "rogue", &["client"]).remove(0);
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .ok()
        .flatten()
        .expect("a group with gid 1");
    let socket = dir.path().join("run").join("api.sock");
    let mut args = daemon_args(dir.path(), &nb.unix_remote());
    args.extend([
        format!("--listen=unix:{}", socket.display()),
        format!("--tls-certificate={}", server.certificate.display()),
        format!("--tls-private-key={}", server.private_key.display()),
        format!("--tls-client-ca={}", server.ca_certificate.display()),
        format!("--socket-group={}", group.name),
    ]);
    let daemon = start(dir.path(), &args, &[]);
    wait_until("the unix socket", Duration::from_secs(15), || socket.exists());
    let port = daemon.grpc_port();

    let ca = Certificate::from_pem(std::fs::read(&server.ca_certificate).unwrap());
    let tls = |identity: Option<&common::TlsPaths>| {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name("localhost");
        if let Some(paths) = identity {
            config = config.identity(Identity::from_pem(
                std::fs::read(&paths.certificate).unwrap(),
                std::fs::read(&paths.private_key).unwrap(),
            ));
        }
        config
    };
    let list = |channel: Channel| async move {
        SubnetServiceClient::new(channel)
            .list_subnets(pb::ListSubnetsRequest::default())
            .await
    };
    let endpoint = |scheme: &str| Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}")).unwrap();

    // With a certificate the CA signed: served.
    let channel = endpoint("https")
        .tls_config(tls(Some(client)))
        .unwrap()
        .connect()
        .await
        .expect("TLS with a client certificate");
    list(channel).await.expect("served over mTLS");

    // Without one, with one from another CA, or in plain text: refused.
    for (what, config) in [
        ("no client certificate", tls(None)),
        ("another CA's", tls(Some(&rogue))),
    ] {
        let refused = match endpoint("https").tls_config(config).unwrap().connect().await {
            Err(_) => true,
            Ok(channel) => list(channel).await.is_err(),
        };
        assert!(refused, "{what} was served");
    }
    let refused = match endpoint("http").connect().await {
        Err(_) => true,
        Ok(channel) => list(channel).await.is_err(),
    };
    assert!(refused, "plain text was served on the TLS port");

    // The unix socket: 0660, the configured group, plain (its mode is its protection).
    let metadata = std::fs::metadata(&socket).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    assert_eq!(metadata.gid(), 1);
    let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .unwrap()
        .connect()
        .await
        .expect("unix socket");
    list(channel).await.expect("served over the unix socket");
}

// ---------------------------------------------------------------------------------------------
// Observability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_vips_addresses_sync_nb_store_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let mut args = daemon_args(dir.path(), &nb.unix_remote());
    args.push("--metrics-listen=127.0.0.1:0".into());
    let daemon = start(dir.path(), &args, &[]);
    let (port, metrics_port) = (daemon.grpc_port(), daemon.metrics_port());
    let channel = plain_channel(port).await;
    create_subnet_and_vip(&channel, "vip-aap", "default").await;
    create_subnet_and_vip(&channel, "vip-reserved", "").await;
    let refused = VipServiceClient::new(channel.clone())
        .create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "Not A Name".into(),
                subnet: "ovn-default".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    wait_ready(&channel, "vip-aap").await;

    let (status, text) = http_get(metrics_port, "/metrics");
    assert!(status.contains("200"), "{status}");
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
    assert_eq!(value("ovn_vipd_vips{subnet=\"ovn-default\",type=\"aap\"}"), 1.0);
    assert_eq!(value("ovn_vipd_vips{subnet=\"ovn-default\",type=\"reserved\"}"), 1.0);
    let used = value("ovn_vipd_addresses_used{subnet=\"ovn-default\",family=\"ipv4\"}");
    let free = value("ovn_vipd_addresses_free{subnet=\"ovn-default\",family=\"ipv4\"}");
    assert!(used >= 2.0, "{used}");
    assert!(free > 200.0 && used + free <= 256.0, "{used} + {free}");
    assert!(value("ovn_vipd_reconcile_duration_seconds_count") >= 1.0);
    assert!(value("ovn_vipd_nb_transactions_total") >= 1.0);
    assert_eq!(value("ovn_vipd_nb_transaction_failures_total"), 0.0);
    assert_eq!(value("ovn_vipd_nb_connected"), 1.0);
    assert_eq!(
        value(&format!("ovn_vipd_nb_leader{{remote=\"{}\"}}", nb.unix_remote())),
        1.0
    );
    assert!(value("ovn_vipd_store_flush_duration_seconds_count") >= 2.0);
    assert_eq!(
        value("ovn_vipd_grpc_requests_total{method=\"/ovnvip.v1.VipService/CreateVip\",code=\"Ok\"}"),
        2.0
    );
    assert_eq!(
        value("ovn_vipd_grpc_requests_total{method=\"/ovnvip.v1.VipService/CreateVip\",code=\"InvalidArgument\"}"),
        1.0
    );
    let (status, _) = http_get(metrics_port, "/other");
    assert!(status.contains("404"), "{status}");

    // NB gone: the gauge says so.
    drop(nb);
    common::wait_for("nb_connected to become 0", Duration::from_secs(15), || {
        let text = http_get(metrics_port, "/metrics").1;
        async move {
            match sample(&text, "ovn_vipd_nb_connected") {
                Some(0.0) => Ok(()),
                _ => Err(text),
            }
        }
    })
    .await;
}

/// One change is reconciled by a pass over what it affects: with 300 VIPs (600 virtual ports) in
/// NB, creating one more looks at a handful of objects and rows, and no full pass runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_an_incremental_pass_whose_cost_does_not_follow_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let mut args = daemon_args(dir.path(), &nb.unix_remote());
    args.push("--metrics-listen=127.0.0.1:0".into());
    let daemon = start(dir.path(), &args, &[]);
    let (port, metrics_port) = (daemon.grpc_port(), daemon.metrics_port());
    let channel = plain_channel(port).await;
    let mut subnets = SubnetServiceClient::new(channel.clone());
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", "fd00:10:16::/64"))
        .await
        .unwrap();
    let mut vips = VipServiceClient::new(channel.clone());
    for index in 0..300 {
        vips.create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: format!("stored-{index}"),
                subnet: "ovn-default".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    let nb_ports = || {
        run(
            "ovn-nbctl",
            &[
                &format!("--db={}", nb.unix_remote()),
                "--bare",
                "--columns=name",
                "find",
                "logical_switch_port",
                "type=virtual",
            ],
        )
        .lines()
        .filter(|line| !line.is_empty())
        .count()
    };
    wait_until("600 virtual ports", 20 * SECOND, || nb_ports() == 600);
    let metrics = || http_get(metrics_port, "/metrics").1;
    let full = |text: &str| sample(text, "ovn_vipd_sync_passes_total{kind=\"full\"}").unwrap_or(0.0);
    let incremental = |text: &str| sample(text, "ovn_vipd_sync_passes_total{kind=\"incremental\"}").unwrap_or(0.0);
    let before = metrics();

    vips.create_vip(pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: "one-more".into(),
            subnet: "ovn-default".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    wait_ready(&channel, "one-more").await;
    assert_eq!(nb_ports(), 602);
    let examined_one = |text: &str| {
        let examined = sample(text, "ovn_vipd_sync_pass_objects").unwrap();
        assert!(
            examined <= 5.0,
            "the last pass looked at {examined} objects and rows with 300 VIPs stored"
        );
    };
    examined_one(&metrics());
    // Barrier: a later change the daemon has provably handled (its VIP Ready, its ports in NB);
    // no full pass ran for either.
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: "marker".into(),
            subnet: "ovn-default".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    wait_ready(&channel, "marker").await;
    assert_eq!(nb_ports(), 604);
    let after = metrics();
    assert_eq!(full(&after), full(&before), "a full pass ran:\n{after}");
    assert!(incremental(&after) >= incremental(&before) + 2.0, "{after}");
    examined_one(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_put_every_rpc_in_a_span_naming_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let mut args = daemon_args(dir.path(), &nb.unix_remote());
    args.extend([
        "--log-format=json".into(),
        "--log=info,ovn_vipd::telemetry=debug,ovn_vipd::reconcile=debug".into(),
    ]);
    let daemon = start(dir.path(), &args, &[]);
    let port = daemon.grpc_port();
    let channel = plain_channel(port).await;
    create_subnet_and_vip(&channel, "vip-logged", "default").await;
    wait_ready(&channel, "vip-logged").await;
    let log = daemon.stderr();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect();
    let answered = lines
        .iter()
        .find(|line| {
            line["fields"]["message"] == "rpc answered"
                && line["span"]["name"] == "rpc"
                && line["span"]["object"] == "vip-logged"
        })
        .unwrap_or_else(|| panic!("no rpc span naming vip-logged in:\n{log}"));
    assert_eq!(answered["span"]["method"], "/ovnvip.v1.VipService/CreateVip");
    assert!(
        lines.iter().any(|line| line["span"]["name"] == "sync"),
        "sync lines carry their span:\n{log}"
    );
    // Every sync pass is a span naming the objects it looks at.
    assert!(
        lines.iter().any(|line| line["span"]["name"] == "pass"
            && line["span"]["vips"]
                .as_str()
                .is_some_and(|vips| vips.split(',').any(|vip| vip == "vip-logged"))),
        "no pass span naming vip-logged:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// ovn-vipd check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_kind_of_problem_and_repairs_what_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb(dir.path());
    let args = daemon_args(dir.path(), &nb.unix_remote());
    let mut daemon = start(dir.path(), &args, &[]);
    let port = daemon.grpc_port();
    let channel = plain_channel(port).await;
    for vip in ["vip-a", "vip-b", "vip-c"] {
        create_subnet_and_vip(&channel, vip, "default").await;
    }
    let reserved = create_subnet_and_vip(&channel, "vip-r", "").await;
    for vip in ["vip-a", "vip-b", "vip-c"] {
        wait_ready(&channel, vip).await;
    }
    let data_dir = format!("--data-dir={}", dir.path().join("data").display());
    let ovn_nb = format!("--ovn-nb={}", nb.unix_remote());
    let check = |repair: bool| {
        let mut all = vec!["check", data_dir.as_str(), ovn_nb.as_str()];
        if repair {
            all.push("--repair");
        }
        run_binary(&all, &[])
    };

    // The daemon holds the store.
    let (code, _, stderr) = check(false);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    let (code, stdout, stderr) = {
        daemon.signal("TERM");
        assert_eq!(daemon.wait(Duration::from_secs(15)).code(), Some(0));
        check(false)
    };
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("clean: store, IPAM and NB agree"), "{stdout}");

    // Break things: an allocation nobody holds, a VIP's MAC not allocated, a virtual port gone,
    // one changed, an owned port nothing wants, and a foreign port named like a VIP.
    {
        let store = ovn_vipd::store::Store::open(&dir.path().join("data").join("store")).unwrap();
        let mut batch = ovn_vipd::store::WriteBatch::new();
        batch.push(ovn_vipd::store::Write::AllocateIp {
            subnet: "ovn-default".into(),
            ip: "10.16.0.200".parse().unwrap(),
            owner: "vip/ghost".into(),
        });
        batch.push(ovn_vipd::store::Write::ReleaseMac {
            subnet: "ovn-default".into(),
            mac: reserved.mac.parse().unwrap(),
        });
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    nb.nbctl(&["lsp-del", "vip-a"]);
    nb.nbctl(&["set", "logical_switch_port", "vip-b", "options:virtual-ip=10.16.0.250"]);
    nb.nbctl(&[
        "lsp-add",
        "ovn-default",
        "stray",
        "--",
        "set",
        "logical_switch_port",
        "stray",
        "external_ids:vendor=ovn-vipd",
        "external_ids:ovn-vipd/owner=vip/stray",
    ]);
    nb.nbctl(&["lsp-del", "vip-c", "--", "lsp-add", "ovn-default", "vip-c"]);
    let foreign_before = nb.nbctl(&["list", "logical_switch_port", "vip-c"]);

    let (code, stdout, stderr) = check(false);
    assert_eq!(code, 1, "{stdout}{stderr}");
    for expected in [
        "problem: address 10.16.0.200 in ovn-default is allocated to vip/ghost, which has no record holding it",
        &format!(
            "problem: vip/vip-r holds mac {} in ovn-default without an allocation",
            reserved.mac
        ),
        "problem: NB row missing: Logical_Switch_Port vip-a",
        "problem: NB row differs from the desired state: Logical_Switch_Port vip-b",
        "problem: owned NB row without an object: Logical_Switch_Port stray",
        "problem: foreign row in the way of vip-c: Logical_Switch_Port vip-c",
    ] {
        assert!(stdout.contains(expected), "{expected} missing from:\n{stdout}");
    }
    assert!(
        stderr.contains("opening the store") && stderr.contains("NB compared"),
        "progress: {stderr}"
    );
    assert_eq!(
        nb.nbctl(&["get", "logical_switch_port", "vip-b", "options:virtual-ip"])
            .trim(),
        "\"10.16.0.250\"",
        "check without --repair changes nothing"
    );

    let (code, stdout, stderr) = check(true);
    assert_eq!(code, 1, "the foreign row is left to a person: {stdout}{stderr}");
    assert_eq!(stdout.matches("repaired: ").count(), 5, "{stdout}");
    let (code, stdout, _) = check(false);
    assert_eq!(code, 1);
    let problems: Vec<&str> = stdout.lines().filter(|line| line.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 1, "{stdout}");
    assert!(
        problems[0].starts_with("problem: foreign row in the way of vip-c: Logical_Switch_Port vip-c ("),
        "{stdout}"
    );
    assert_eq!(
        nb.nbctl(&["get", "logical_switch_port", "vip-a", "type"]).trim(),
        "virtual"
    );
    assert_ne!(
        nb.nbctl(&["get", "logical_switch_port", "vip-b", "options:virtual-ip"])
            .trim(),
        "\"10.16.0.250\""
    );
    assert!(nb
        .nbctl(&["--bare", "--columns=name", "find", "logical_switch_port", "name=stray"])
        .trim()
        .is_empty());
    assert_eq!(nb.nbctl(&["list", "logical_switch_port", "vip-c"]), foreign_before);

    nb.nbctl(&["lsp-del", "vip-c"]);
    let (code, stdout, _) = check(true);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = check(false);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("clean"), "{stdout}");

    // The daemon opens the repaired store without complaint.
    let daemon = start(dir.path(), &args, &[]);
    daemon.wait_for_log("store open and consistent", Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// Processes started from docker-compose.yml, stopped by PID when dropped.
struct Stack(Vec<Child>);

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compose_services_run_locally_and_serve_a_vip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap()).unwrap();
    let services = &compose["services"];
    for service in ["ovn-nb", "ovn-sb", "ovn-northd", "ovn-vipd"] {
        assert!(services[service].is_mapping(), "service {service} missing");
    }
    // The image is built from the repository's multi-stage Dockerfile.
    assert_eq!(services["ovn-nb"]["build"].as_str(), Some("."));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.lines().filter(|line| line.starts_with("FROM ")).count() >= 2);
    assert!(dockerfile.contains("COPY --from=build"));
    // Volumes for the NB database and the store; ports only on loopback.
    let volumes = |service: &str| format!("{:?}", services[service]["volumes"]);
    assert!(volumes("ovn-nb").contains(":/var/lib/ovn"));
    assert!(volumes("ovn-vipd").contains(":/var/lib/ovn-vipd"));
    let ports: Vec<&str> = services["ovn-vipd"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|port| port.as_str())
        .collect();
    assert!(ports.iter().any(|port| port.ends_with(":50051")), "{ports:?}");
    assert!(ports.iter().all(|port| port.starts_with("127.0.0.1:")), "{ports:?}");

    // Each service's command line, run here: same binaries and flags, paths and ports remapped.
    let dir = tempfile::tempdir().unwrap();
    // The compose file names its ports: each is mapped to one held for this test.
    let reserved: Vec<common::ReservedPort> = (0..4).map(|_| reserve_port()).collect();
    let (nb_port, sb_port, grpc_port, metrics_port) =
        (reserved[0].port, reserved[1].port, reserved[2].port, reserved[3].port);
    let data = dir.path().join("vipd-data");
    let db = dir.path().join("ovn-db");
    let rundir = dir.path().join("run");
    std::fs::create_dir_all(&db).unwrap();
    let remap = |text: &str| {
        text.replace("/var/lib/ovn-vipd", path(&data))
            .replace("/var/lib/ovn", path(&db))
            .replace("/var/run/ovn", path(&rundir))
            .replace("tcp:ovn-nb:", "tcp:127.0.0.1:")
            .replace("tcp:ovn-sb:", "tcp:127.0.0.1:")
            .replace(":6641", &format!(":{nb_port}"))
            .replace(":6642", &format!(":{sb_port}"))
            .replace(":50051", &format!(":{grpc_port}"))
            .replace(":50052", &format!(":{metrics_port}"))
            .replace("0.0.0.0", "127.0.0.1")
    };
    let mut stack = Stack(Vec::new());
    for service in ["ovn-nb", "ovn-sb", "ovn-northd", "ovn-vipd"] {
        let command: Vec<String> = services[service]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{service}: command is a list"))
            .iter()
            .map(|part| remap(part.as_str().expect("string")))
            .collect();
        let program = if command[0] == "ovn-vipd" {
            BINARY.to_string()
        } else {
            command[0].clone()
        };
        let log = std::fs::File::create(dir.path().join(format!("{service}.log"))).unwrap();
        let child = Command::new(program)
            .args(&command[1..])
            .env_remove("OVN_VIPD_LISTEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("{service}: {error}"));
        stack.0.push(child);
        if let Some(port) = match service {
            "ovn-nb" => Some(nb_port),
            "ovn-sb" => Some(sb_port),
            _ => None,
        } {
            wait_until(&format!("{service} on {port}"), Duration::from_secs(15), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
    }
    let channel = plain_channel(grpc_port).await;
    create_subnet_and_vip(&channel, "vip-compose", "default").await;
    wait_ready(&channel, "vip-compose").await;
    let nb = format!("--db=tcp:127.0.0.1:{nb_port}");
    assert_eq!(
        run("ovn-nbctl", &[&nb, "get", "logical_switch_port", "vip-compose", "type"]).trim(),
        "virtual"
    );
    // ovn-northd took it into SB.
    let sb = format!("--db=tcp:127.0.0.1:{sb_port}");
    wait_until("the port binding in SB", 15 * SECOND, || {
        run(
            "ovn-sbctl",
            &[
                &sb,
                "--bare",
                "--columns=type",
                "find",
                "port_binding",
                "logical_port=vip-compose",
            ],
        )
        .trim()
            == "virtual"
    });
    let (status, text) = http_get(metrics_port, "/metrics");
    assert!(status.contains("200") && text.contains("ovn_vipd_vips"), "{status}");
    drop(stack);
}
