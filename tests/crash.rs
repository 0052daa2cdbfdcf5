//! Crash safety: a child process creates and deletes VIPs as fast as it can and prints each
//! change once it is acknowledged; the test SIGKILLs it at random moments, many times over.
//! After every kill: each acknowledged change is present, no address or MAC has two owners, and
//! the consistency check is clean.
//!
//! The child is this same test binary, started with `CRASH_CHILD_DIR` set and `--ignored` (see
//! `child`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ovn_vipd::model::{MacAddr, Strategy, Subnet, VipSpec, VipType};
use ovn_vipd::registry::Registry;
use rand::Rng;

const WORKERS: usize = 4;
const NAMES_PER_WORKER: usize = 40;

fn vip_spec(name: &str) -> VipSpec {
    VipSpec {
        name: name.into(),
        namespace: String::new(),
        subnet: "crash".into(),
        vip_type: VipType::Reserved,
        v4ip: None,
        v6ip: None,
        mac: None,
        selector: BTreeMap::new(),
    }
}

/// The child: runs only when started by the parent test (ignored in a normal run, so it is never
/// counted as a test that passed).
#[test]
#[ignore = "the crash test's child process; started by acknowledged_changes_survive_sigkill"]
fn child() {
    let Ok(dir) = std::env::var("CRASH_CHILD_DIR") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (registry, _) = Registry::open(std::path::Path::new(&dir)).unwrap();
        let registry = Arc::new(registry);
        let subnet = Subnet {
            name: "crash".into(),
            logical_switch: "crash".into(),
            cidr_v4: Some("10.99.0.0/24".parse().unwrap()),
            cidr_v6: Some("fd00:99::/64".parse().unwrap()),
            gateway_v4: None,
            gateway_v6: None,
            exclude_ips: vec![],
            strategy: Strategy::Random,
            vpc: ovn_vipd::model::DEFAULT_VPC.into(),
        };
        registry.create_subnet(subnet).await.unwrap();
        println!("READY");
        let mut tasks = Vec::new();
        for worker in 0..WORKERS {
            let registry = registry.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let index = rand::thread_rng().gen_range(0..NAMES_PER_WORKER);
                    let name = format!("w{worker}-v{index}");
                    if registry.get_vip(&name).is_ok() {
                        println!("START {name} delete");
                        registry.delete_vip(&name).await.unwrap();
                        println!("ACK {name} deleted");
                    } else {
                        println!("START {name} create");
                        match registry.create_vip(vip_spec(&name)).await {
                            Ok(vip) => println!(
                                "ACK {name} created {} {} {}",
                                vip.v4ip.map(|ip| ip.to_string()).unwrap_or_default(),
                                vip.v6ip.map(|ip| ip.to_string()).unwrap_or_default(),
                                vip.mac
                            ),
                            Err(error) => println!("ACK {name} refused {error}"),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[derive(Debug, Clone, PartialEq)]
enum Acked {
    Created(IpAddr, IpAddr, MacAddr),
    Deleted,
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    if std::env::var("CRASH_CHILD_DIR").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
    let mut total_acks = 0usize;
    let rounds = 15;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reader_lines = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                reader_lines.lock().unwrap().push(line);
            }
        });
        // Let it get going, then kill it at a random moment (kept: the random moment is the test).
        common::wait_until("the child to be ready", Duration::from_secs(20), || {
            lines.lock().unwrap().iter().any(|line| line.ends_with("READY"))
        });
        std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(50..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();

        // What was acknowledged, and what each worker had in flight at the kill.
        let mut in_flight: BTreeMap<String, String> = BTreeMap::new();
        for line in lines.lock().unwrap().iter() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["START", name, _] => {
                    in_flight.insert(name.to_string(), line.clone());
                }
                ["ACK", name, "created", v4, v6, mac] => {
                    in_flight.remove(*name);
                    acked.insert(
                        name.to_string(),
                        Acked::Created(v4.parse().unwrap(), v6.parse().unwrap(), mac.parse().unwrap()),
                    );
                    total_acks += 1;
                }
                ["ACK", name, "deleted"] => {
                    in_flight.remove(*name);
                    acked.insert(name.to_string(), Acked::Deleted);
                    total_acks += 1;
                }
                ["ACK", name, "refused", ..] => {
                    in_flight.remove(*name);
                }
                _ => {}
            }
        }

        let (registry, report) = Registry::open(dir.path()).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        assert!(registry.check().unwrap().is_clean());
        let vips = registry.list_vips();
        let mut seen_ips = std::collections::HashSet::new();
        let mut seen_macs = std::collections::HashSet::new();
        for vip in &vips {
            for ip in vip.addresses() {
                assert!(seen_ips.insert(ip), "round {round}: {ip} owned twice");
            }
            assert!(seen_macs.insert(vip.mac), "round {round}: mac {} owned twice", vip.mac);
        }
        for (name, state) in &acked {
            if in_flight.contains_key(name) {
                continue; // the change after the last acknowledged one may or may not have landed
            }
            let found = vips.iter().find(|vip| &vip.spec.name == name);
            match (state, found) {
                (Acked::Created(v4, v6, mac), Some(vip)) => {
                    assert_eq!(vip.addresses(), vec![*v4, *v6], "round {round}: {name}");
                    assert_eq!(vip.mac, *mac, "round {round}: {name}");
                }
                (Acked::Deleted, None) => {}
                (state, found) => panic!("round {round}: {name} acknowledged as {state:?} but the store has {found:?}"),
            }
        }
        // The store's truth becomes the baseline for the next round.
        acked = vips
            .iter()
            .map(|vip| {
                let addresses = vip.addresses();
                (
                    vip.spec.name.clone(),
                    Acked::Created(addresses[0], addresses[1], vip.mac),
                )
            })
            .collect();
        drop(registry);
    }
    assert!(
        total_acks > rounds * 10,
        "the child made too little progress to prove anything: {total_acks} acks"
    );
}
