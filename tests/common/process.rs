//! The `ovn-vipd` binary as a child process, as systemd or docker would run it: its stderr goes to
//! a file the test can read, and it is stopped by its PID when dropped, pass or fail.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let log = dir.join(format!("ovn-vipd-{}.log", super::free_port()));
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
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "ovn-vipd did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "ovn-vipd never logged {text:?}; its log:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// The arguments of a daemon on `nb` with its store in `dir`, gRPC on 127.0.0.1:`port`.
pub fn daemon_args(dir: &Path, nb: &str, port: u16) -> Vec<String> {
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(error) => assert!(Instant::now() < deadline, "the daemon never served gRPC: {error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let mut vips = VipServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = vips
            .get_vip(pb::GetVipRequest { name: vip.into() })
            .await
            .expect("get vip")
            .into_inner()
            .status
            .expect("status");
        if status.ready {
            return;
        }
        assert!(Instant::now() < deadline, "{vip} never became ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
