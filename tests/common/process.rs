//! The `ovn-vipd` binary as a child process, as systemd or docker would run it: its stderr goes to
//! a file the test can read, and it is stopped by its PID when dropped, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let mut command = Command::new(BINARY);
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
