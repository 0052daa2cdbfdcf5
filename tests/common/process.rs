//! The `ovn-vipd` binary as a child process, as systemd or docker would run it: its stderr goes to
//! a file the test can read, and it is stopped by its PID when dropped, pass or fail.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use ovn_vipd::api::proto::v1 as pb;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::{Channel, Endpoint};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ovn-vipd");

pub struct DaemonProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts `ovn-vipd args…` with `env` added to the environment (and every `OVN_VIPD_*`
    /// variable of the test's own environment removed).
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("ovn-vipd-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let stderr = std::fs::File::create(&log).expect("log file");
        // OVN_VIPD_WRAPPER runs the daemon under a tool (e.g. "heaptrack -o /tmp/heap"), for
        // benchmarks that look at where memory goes.
        let mut command = match std::env::var("OVN_VIPD_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut parts = wrapper.split_whitespace();
                let mut command = Command::new(parts.next().unwrap_or_default());
                command.args(parts).arg(BINARY);
                command
            }
            _ => Command::new(BINARY),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, _) in std::env::vars() {
            if key.starts_with("OVN_VIPD_") || key == "NOTIFY_SOCKET" || key.starts_with("WATCHDOG_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("start ovn-vipd");
        DaemonProcess {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn signal(&self, signal: &str) {
        super::run("kill", &[&format!("-{signal}"), &self.pid().to_string()]);
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = super::wait_for_blocking("ovn-vipd to exit", timeout, || {
            child.try_wait().expect("try_wait").ok_or_else(|| "running".to_string())
        });
        self.child = None;
        status
    }

    /// The TCP addresses of the listeners the daemon logged as bound on lines containing `what`
    /// (`"gRPC listening"`, `"metrics listening"`; text or JSON logs), once there are `count`
    /// (waits up to 20 s). With port 0 in the flags these carry the port the kernel chose.
    pub fn bound_addresses(&self, what: &str, count: usize) -> Vec<std::net::SocketAddr> {
        super::wait_for_blocking(
            &format!("ovn-vipd to log {count} {what:?} TCP addresses"),
            Duration::from_secs(20),
            || {
                let log = self.stderr();
                let found: Vec<_> = log
                    .lines()
                    .filter(|line| line.contains(what))
                    .filter_map(logged_address)
                    .collect();
                if found.len() >= count {
                    Ok(found)
                } else {
                    Err(format!("its log:\n{log}"))
                }
            },
        )
    }

    /// The gRPC port of a daemon started with `--listen=tcp:127.0.0.1:0` (see [`daemon_args`]).
    pub fn grpc_port(&self) -> u16 {
        self.bound_addresses("gRPC listening", 1)[0].port()
    }

    /// The metrics port of a daemon started with `--metrics-listen=127.0.0.1:0`.
    pub fn metrics_port(&self) -> u16 {
        self.bound_addresses("metrics listening", 1)[0].port()
    }

    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        super::wait_for_blocking(&format!("ovn-vipd to log {text:?}"), timeout, || {
            let log = self.stderr();
            if log.contains(text) {
                Ok(())
            } else {
                Err(format!("its log:\n{log}"))
            }
        })
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ovn-vipd args…` to completion (for `config` and `check`): (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("OVN_VIPD_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run ovn-vipd");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The address in a "… listening" log line: `listen=tcp:IP:PORT` / `listen=IP:PORT` (text) or
/// `"listen":"tcp:IP:PORT"` (JSON); `None` for a unix socket.
fn logged_address(line: &str) -> Option<std::net::SocketAddr> {
    let (_, value) = line
        .split_once("listen=")
        .or_else(|| line.split_once("\"listen\":\""))?;
    let value = value.strip_prefix("tcp:").unwrap_or(value);
    let end = value
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// The arguments of a daemon on `nb` with its store in `dir`, gRPC on 127.0.0.1 at a port the
/// kernel chooses: learn it with [`DaemonProcess::grpc_port`].
pub fn daemon_args(dir: &Path, nb: &str) -> Vec<String> {
    daemon_args_on(dir, nb, 0)
}

/// The same on a given port: 0, or one held by a [`super::ReservedPort`] (for a daemon that must
/// come back on the same port after a restart).
pub fn daemon_args_on(dir: &Path, nb: &str, port: u16) -> Vec<String> {
    vec![
        format!("--ovn-nb={nb}"),
        format!("--data-dir={}", dir.join("data").display()),
        format!("--listen=tcp:127.0.0.1:{port}"),
    ]
}

/// Starts the daemon; without `--metrics-listen` in `args`, with metrics off (tests run in
/// parallel and would fight over the default port).
pub fn start(dir: &Path, args: &[String], env: &[(&str, &str)]) -> DaemonProcess {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !args.iter().any(|arg| arg.starts_with("--metrics-listen")) {
        args.push("--metrics-listen=off");
    }
    DaemonProcess::start(dir, &args, env)
}

pub async fn plain_channel(port: u16) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint");
    super::wait_for("the daemon to serve gRPC", Duration::from_secs(20), || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect().await.map_err(|error| format!("{error:?}")) }
    })
    .await
}

pub async fn create_subnet_and_vip(channel: &Channel, vip: &str, namespace: &str) -> pb::VipStatus {
    let mut subnets = SubnetServiceClient::new(channel.clone());
    let mut vips = VipServiceClient::new(channel.clone());
    match subnets
        .create_subnet(super::subnet_request("ovn-default", "10.16.0.0/24", ""))
        .await
    {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        Err(status) => panic!("create subnet: {status}"),
    }
    vips.create_vip(pb::CreateVipRequest {
        vip: Some(pb::Vip {
            name: vip.into(),
            subnet: "ovn-default".into(),
            namespace: namespace.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("create vip")
    .into_inner()
    .status
    .expect("status")
}

pub async fn wait_ready(channel: &Channel, vip: &str) {
    let vips = VipServiceClient::new(channel.clone());
    super::requests::wait_for_vip_status(&vips, vip, "to become ready", Duration::from_secs(15), |status| {
        status.ready
    })
    .await;
}

/// One HTTP/1.1 GET over a plain socket: (status line, body).
pub fn http_get(port: u16, target: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the sample `name` (with its labels exactly as rendered) in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}
