//! vipctl against the real daemon: Kube-OVN manifests as users have them apply unchanged, `get`
//! shows the result, and a malformed manifest is refused before anything is sent.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::TestDaemon;

fn vipctl(daemon: &TestDaemon, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipctl"))
        .arg("--server")
        .arg(&daemon.endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vipctl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("vipctl output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_pages_manifests_apply_unchanged_and_get_shows_them() {
    let daemon = TestDaemon::start().await;
    let run = |args: Vec<String>, stdin: Option<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| vipctl(&daemon, &args, stdin.as_deref()))
    };
    // Subnets and rules; the rule on VIP slr-01 applies before that VIP exists (the Kubernetes
    // way), not ready until it does.
    let (ok, out, err) = run(
        vec!["apply".into(), "-f".into(), fixture("kube-ovn-objects.yaml")],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("subnet/ovn-default created")
            && out.contains("subnet/dual created")
            && out.contains("switchlbrule/slr-endpoints created"),
        "{out}{err}"
    );
    let mut rule = String::new();
    for _ in 0..200 {
        let (ok, out, err) = run(
            vec![
                "get".into(),
                "slr".into(),
                "slr-endpoints".into(),
                "-o".into(),
                "json".into(),
            ],
            None,
        );
        assert!(ok, "{err}");
        rule = out;
        if rule.contains("VipNotFound") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(rule.contains("VipNotFound"), "{rule}");

    // Every example of the VIP page, unchanged.
    let (ok, out, err) = run(
        vec!["apply".into(), "-f".into(), fixture("vip-zh-manifests.yaml")],
        None,
    );
    assert!(ok, "{out}{err}");
    for name in ["vip-dynamic-01", "static-vip01", "vip-aap", "slr-01", "pod-use-vip"] {
        assert!(out.contains(&format!("vip/{name} created")), "{name}: {out}");
    }
    // Applying again changes nothing.
    let (ok, out, err) = run(
        vec!["apply".into(), "-f".into(), fixture("vip-zh-manifests.yaml")],
        None,
    );
    assert!(ok && out.contains("vip/vip-dynamic-01 unchanged"), "{out}{err}");
    let (ok, out, err) = run(
        vec!["apply".into(), "-f".into(), fixture("kube-ovn-objects.yaml")],
        None,
    );
    assert!(ok && out.contains("subnet/ovn-default unchanged"), "{out}{err}");

    let (ok, table, err) = run(vec!["get".into(), "vip".into()], None);
    assert!(ok, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "NAMESPACE", "V4IP", "V6IP", "MAC", "SUBNET", "TYPE", "READY"]
    );
    let static_row = table
        .lines()
        .find(|line| line.starts_with("static-vip01"))
        .expect("static-vip01 listed");
    assert!(
        static_row.contains("10.16.0.121") && static_row.contains("ovn-default"),
        "{static_row}"
    );
    let slr_row = table
        .lines()
        .find(|line| line.starts_with("slr-01"))
        .expect("slr-01 listed");
    assert!(slr_row.contains("switch_lb_vip"), "{slr_row}");
    let (ok, wide, _) = run(
        vec![
            "get".into(),
            "vip".into(),
            "pod-use-vip".into(),
            "-o".into(),
            "wide".into(),
        ],
        None,
    );
    assert!(
        ok && wide.contains("default/static-ip"),
        "the pod that uses the VIP is its holder:\n{wide}"
    );
    let (ok, json, _) = run(
        vec![
            "get".into(),
            "vip".into(),
            "static-vip01".into(),
            "-o".into(),
            "json".into(),
        ],
        None,
    );
    assert!(ok, "{json}");
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
    assert_eq!(parsed["kind"], "Vip");

    // A malformed manifest names the document and the field, and sends nothing.
    let bad = "apiVersion: kubeovn.io/v1\nkind: Vip\nmetadata:\n  name: fine\nspec:\n  subnet: ovn-default\n---\napiVersion: kubeovn.io/v1\nkind: Vip\nmetadata:\n  name: vip-x\nspec:\n  subnet: ovn-default\n  v4ip: 10.16.0.999\n";
    let (ok, out, err) = run(vec!["apply".into(), "-f".into(), "-".into()], Some(bad.to_string()));
    assert!(!ok, "{out}");
    assert!(
        err.contains("document 2") && err.contains("vip-x") && err.contains("spec.v4ip"),
        "{err}"
    );
    let (_, table, _) = run(vec!["get".into(), "vip".into()], None);
    assert!(
        !table.contains("fine"),
        "nothing of a refused file is applied:\n{table}"
    );

    // Errors print the gRPC code and exit non-zero.
    let (ok, _, err) = run(vec!["delete".into(), "vip".into(), "ghost".into()], None);
    assert!(!ok && err.contains("NOT_FOUND"), "{err}");
    let (ok, out, err) = run(vec!["delete".into(), "vip".into(), "vip-dynamic-01".into()], None);
    assert!(ok, "{out}{err}");
    daemon.stop().await;
}
