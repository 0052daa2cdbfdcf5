//! `vipctl apply` is declarative (issue #17): a bundle in any order applies in one go, a changed
//! mutable field is updated (and NB follows), an immutable change is reported and changes
//! nothing, and `vipctl delete -f` removes the bundle in reverse dependency order.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_until_async, TestDaemon};

fn vipctl(daemon: &TestDaemon, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipctl"))
        .arg("--server")
        .arg(&daemon.endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vipctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("vipctl output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn get(daemon: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["--if-exists", "get"];
    all.extend_from_slice(args);
    daemon.nb.nbctl(&all).trim().to_string()
}

/// Pods, then a rule, then the VIPs, then their subnet: reverse dependency order.
fn bundle(selector: &str, aap_ip: &str) -> String {
    let aap_ip = if aap_ip.is_empty() {
        String::new()
    } else {
        format!("  v4ip: {aap_ip}\n")
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: one
  namespace: default
  labels:
    app: aap1
  annotations:
    ovn.kubernetes.io/aaps: vip-aap
    ovn.kubernetes.io/logical_switch: ovn-default
---
apiVersion: v1
kind: Pod
metadata:
  name: two
  namespace: default
  labels:
    app: aap2
  annotations:
    ovn.kubernetes.io/aaps: vip-aap
    ovn.kubernetes.io/logical_switch: ovn-default
---
apiVersion: kubeovn.io/v1
kind: SwitchLBRule
metadata:
  name: web
spec:
  vip: web-vip
  namespace: default
  endpoints:
    - 10.16.0.101
  ports:
  - name: http
    port: 80
    protocol: TCP
---
apiVersion: kubeovn.io/v1
kind: Vip
metadata:
  name: web-vip
spec:
  subnet: ovn-default
  type: switch_lb_vip
---
apiVersion: kubeovn.io/v1
kind: Vip
metadata:
  name: vip-aap
spec:
  subnet: ovn-default
  namespace: default
{aap_ip}  selector:
    - "app: {selector}"
---
apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: ovn-default
spec:
  cidrBlock: 10.16.0.0/16
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_ordered_bundle_applies_in_one_go_and_a_changed_selector_updates_the_vip() {
    let daemon = TestDaemon::start().await;
    let run = |args: &[&str], stdin: String| tokio::task::block_in_place(|| vipctl(&daemon, args, &stdin));

    let (ok, out, err) = run(&["apply", "-f", "-"], bundle("aap1", ""));
    assert!(ok, "{out}{err}");
    for object in ["subnet/ovn-default", "vip/web-vip", "vip/vip-aap", "switchlbrule/web"] {
        assert!(out.contains(&format!("{object} created")), "{object}: {out}{err}");
    }
    // Dependency order, whatever the file order.
    let position = |text: &str| out.find(text).unwrap_or(usize::MAX);
    assert!(position("subnet/ovn-default") < position("vip/web-vip"), "{out}");
    assert!(position("vip/vip-aap") < position("switchlbrule/web"), "{out}");
    assert!(position("switchlbrule/web") < position("pod/"), "{out}");
    wait_until_async("pod one as the parent", Duration::from_secs(10), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-parents"]).trim_matches('"') == "one.default"
    })
    .await;
    let address = daemon
        .nb
        .nbctl(&["get", "logical_switch_port", "vip-aap", "options:virtual-ip"])
        .trim()
        .trim_matches('"')
        .to_string();
    assert!(address.starts_with("10.16."), "{address}");

    // The selector changes in the manifest: the VIP is updated, NB follows.
    let (ok, out, err) = run(&["apply", "-f", "-"], bundle("aap2", ""));
    assert!(ok, "{out}{err}");
    assert!(out.contains("vip/vip-aap configured"), "{out}{err}");
    assert!(out.contains("subnet/ovn-default unchanged"), "{out}{err}");
    wait_until_async("pod two as the parent", Duration::from_secs(10), || {
        get(&daemon, &["logical_switch_port", "vip-aap", "options:virtual-parents"]).trim_matches('"') == "two.default"
            && get(&daemon, &["logical_switch_port", "two.default", "port_security"]).contains(&address)
            && !get(&daemon, &["logical_switch_port", "one.default", "port_security"]).contains(&address)
    })
    .await;

    // An address change cannot be applied: reported with the field, nothing changes.
    let before = daemon.nb.nbctl(&["list", "logical_switch_port", "vip-aap"]);
    let (ok, out, err) = run(&["apply", "-f", "-"], bundle("aap1", "10.16.200.200"));
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("vip/vip-aap") && err.contains("cannot change") && err.contains("v4ip"),
        "{err}"
    );
    assert_eq!(daemon.nb.nbctl(&["list", "logical_switch_port", "vip-aap"]), before);

    // A subnet's excludeIps widen through apply; its CIDR cannot change.
    let subnet = |cidr: &str| {
        format!(
            "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: ovn-default\nspec:\n  cidrBlock: {cidr}\n  excludeIps:\n  - 10.16.255.250..10.16.255.253\n"
        )
    };
    let (ok, out, err) = run(&["apply", "-f", "-"], subnet("10.16.0.0/16"));
    assert!(ok && out.contains("subnet/ovn-default configured"), "{out}{err}");
    let (ok, out, err) = run(&["get", "subnet", "ovn-default"], String::new());
    assert!(ok && out.contains("10.16.255.250..10.16.255.253"), "{out}{err}");
    let (ok, out, err) = run(&["apply", "-f", "-"], subnet("10.17.0.0/16"));
    assert!(
        !ok && err.contains("cannot change") && err.contains("cidr_v4"),
        "{out}{err}"
    );

    // delete -f: in reverse dependency order, so everything goes in one go.
    let (ok, out, err) = run(&["delete", "-f", "-"], bundle("aap2", ""));
    assert!(ok, "{out}{err}");
    assert!(out.contains("subnet/ovn-default deleted"), "{out}{err}");
    assert!(
        position_in(&out, "pod/") < position_in(&out, "switchlbrule/web"),
        "{out}"
    );
    assert!(
        position_in(&out, "switchlbrule/web") < position_in(&out, "vip/web-vip"),
        "{out}"
    );
    daemon.stop().await;
}

fn position_in(text: &str, what: &str) -> usize {
    text.find(what).unwrap_or(usize::MAX)
}
