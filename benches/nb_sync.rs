//! End to end through the daemon: a burst of AAP VIP creations from 64 concurrent gRPC clients
//! until the last virtual port is in NB, beside the floor (the same rows in one transaction from
//! a minimal raw JSON-RPC writer), `ovn-nbctl` one call per VIP, and the Python `ovsdbapp`
//! library (what OpenStack uses) one transaction per VIP, for each size in NB_SYNC_BENCH_SIZES;
//! and the latency of one VIP change with many objects in the store.
//!
//! `cargo bench --bench nb_sync` (NB_SYNC_BENCH_SIZES=1000,10000, NB_SYNC_BENCH_NBCTL=1000,
//! NB_SYNC_BENCH_STORED=100000, NB_SYNC_BENCH_LOG for the daemon's log filter).

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{OvsdbServer, TestDaemon};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::ovsdb::{Condition, Connection, ConnectionOptions, Operation, Remote, Value};
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn virtual_ip(index: usize) -> String {
    format!(
        "10.{}.{}.{}",
        100 + index / 62_500,
        (index / 250) % 250,
        index % 250 + 2
    )
}

async fn count_virtual_ports(connection: &Connection) -> usize {
    let select = Operation::Select {
        table: "Logical_Switch_Port".into(),
        conditions: vec![Condition::equal("type", Value::string("virtual"))],
        columns: Some(vec!["name".into()]),
    };
    match connection.transact("OVN_Northbound", &[select], None).await {
        Ok(results) => results[0].rows.as_ref().map_or(0, Vec::len),
        Err(_) => 0,
    }
}

fn aap(name: String) -> pb::Vip {
    pb::Vip {
        name,
        subnet: "bench".into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

async fn through_the_daemon(vips: usize) -> (Duration, Duration, Duration, Duration) {
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    SubnetServiceClient::new(channel.clone())
        .create_subnet(pb::CreateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "bench".into(),
                cidr_v4: "10.0.0.0/8".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("subnet");
    let (probe, _) = Connection::open(
        &Remote::parse(&daemon.nb.unix_remote()).unwrap(),
        None,
        &ConnectionOptions::default(),
    )
    .await
    .expect("probe connection");
    let started = Instant::now();
    let clients = 64;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut vips_client = VipServiceClient::new(channel);
                let mut latencies = Vec::new();
                for index in (client..vips).step_by(clients) {
                    let sent = Instant::now();
                    vips_client
                        .create_vip(pb::CreateVipRequest {
                            vip: Some(aap(format!("vip-{index}"))),
                        })
                        .await
                        .expect("create");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let acknowledged = started.elapsed();
    while count_virtual_ports(&probe).await < vips {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converged = started.elapsed();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    // What was timed happened: every acknowledged VIP is in the daemon's store after it stops.
    let mut daemon = daemon;
    daemon.stop_daemon_only().await;
    let path = daemon.dir.path().join("data").join("store");
    let stored = common::wait_for_blocking("the stopped daemon's store lock", Duration::from_secs(10), || {
        ovn_vipd::store::Store::open(&path)
            .map(|store| store.vips().count())
            .map_err(|error| error.to_string())
    });
    assert_eq!(stored, vips, "acknowledged VIPs in the store");
    daemon.stop().await;
    (acknowledged, converged, p50, p99)
}

fn floor(vips: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb_quiet(dir.path());
    server.nbctl(&["ls-add", "bench"]);
    let started = Instant::now();
    let mut text = String::with_capacity(vips * 300);
    text.push_str(r#"{"id":1,"method":"transact","params":["OVN_Northbound""#);
    for index in 0..vips {
        text.push_str(&format!(
            r#",{{"op":"insert","table":"Logical_Switch_Port","uuid-name":"p{index}","row":{{"name":"vip-{index}","type":"virtual","options":["map",[["virtual-ip","{}"]]],"external_ids":["map",[["vendor","ovn-vipd"],["ovn-vipd/owner","vip/vip-{index}"]]]}}}}"#,
            virtual_ip(index)
        ));
    }
    text.push_str(r#",{"op":"mutate","table":"Logical_Switch","where":[["name","==","bench"]],"mutations":[["ports","insert",["set",["#);
    for index in 0..vips {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&format!(r#"["named-uuid","p{index}"]"#));
    }
    text.push_str("]]]]}]}");
    let mut stream = UnixStream::connect(&server.socket).expect("connect");
    stream.write_all(text.as_bytes()).expect("write");
    let mut reply = Vec::new();
    let mut buffer = vec![0u8; 65536];
    loop {
        let read = stream.read(&mut buffer).expect("read");
        assert!(read > 0, "server closed");
        reply.extend_from_slice(&buffer[..read]);
        if serde_json::from_slice::<serde_json::Value>(&reply).is_ok() {
            break;
        }
    }
    started.elapsed()
}

fn nbctl(vips: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb_quiet(dir.path());
    server.nbctl(&["ls-add", "bench"]);
    let started = Instant::now();
    for index in 0..vips {
        let name = format!("vip-{index}");
        let option = format!("virtual-ip={}", virtual_ip(index));
        server.nbctl(&[
            "lsp-add",
            "bench",
            &name,
            "--",
            "lsp-set-type",
            &name,
            "virtual",
            "--",
            "lsp-set-options",
            &name,
            &option,
        ]);
    }
    started.elapsed()
}

/// ovsdbapp (Python), one transaction per port; `None` when it is not installed. It runs with the
/// Python of the virtual environment `scripts/install-deps bench` fills (`OVN_VIPD_VENV`, default
/// `target/py`).
fn ovsdbapp(vips: usize) -> Option<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb_quiet(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ovsdbapp_create.py");
    let venv =
        std::env::var("OVN_VIPD_VENV").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/py").into());
    let output = std::process::Command::new(format!("{venv}/bin/python3"))
        .args([script, &server.unix_remote(), "bench", &vips.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("ovsdbapp: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let seconds: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    Some(Duration::from_secs_f64(seconds))
}

/// With `stored` plain VIPs in the store, how long one AAP VIP takes to reach NB.
async fn single_change(stored: usize) -> (Duration, Duration) {
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    SubnetServiceClient::new(channel.clone())
        .create_subnet(pb::CreateSubnetRequest {
            subnet: Some(pb::Subnet {
                name: "bench".into(),
                cidr_v4: "10.0.0.0/8".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("subnet");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let channel = channel.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut client = VipServiceClient::new(channel);
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= stored {
                        break;
                    }
                    let vip = pb::Vip {
                        name: format!("stored-{index}"),
                        subnet: "bench".into(),
                        ..Default::default()
                    };
                    client
                        .create_vip(pb::CreateVipRequest { vip: Some(vip) })
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("fill");
    }
    let (probe, _) = Connection::open(
        &Remote::parse(&daemon.nb.unix_remote()).unwrap(),
        None,
        &ConnectionOptions::default(),
    )
    .await
    .expect("probe connection");
    let mut client = VipServiceClient::new(channel);
    let mut samples = Vec::new();
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        client
            .create_vip(pb::CreateVipRequest {
                vip: Some(aap(format!("single-{round}"))),
            })
            .await
            .expect("create");
        while count_virtual_ports(&probe).await < round + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    daemon.stop().await;
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn main() {
    // The daemon's own logs would drown the figures.
    std::env::set_var(
        "RUST_LOG",
        std::env::var("NB_SYNC_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let sizes: Vec<usize> = std::env::var("NB_SYNC_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    let nbctl_cap = env_number("NB_SYNC_BENCH_NBCTL", 1_000);
    let stored = env_number("NB_SYNC_BENCH_STORED", 100_000);
    machine::describe("cargo bench --bench nb_sync");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for vips in sizes {
        let (acknowledged, converged, p50, p99) = runtime.block_on(through_the_daemon(vips));
        let floor_time = floor(vips);
        let nbctl_vips = vips.min(nbctl_cap);
        let nbctl_time = nbctl(nbctl_vips);
        let ovsdbapp_time = ovsdbapp(vips);
        let per_row = |time: Duration, rows: usize| time.as_secs_f64() / rows as f64;
        let floor_per_row = per_row(floor_time, vips);
        let line = |scenario: &str, rows: usize, time: Duration| {
            println!(
                "| {scenario} | {rows} | {:.3} | {:.0} | {:.2}x |",
                time.as_secs_f64(),
                rows as f64 / time.as_secs_f64(),
                per_row(time, rows) / floor_per_row
            );
        };
        println!("\n| scenario | VIPs | seconds | VIPs/s | vs floor (per VIP) |");
        println!("|---|---:|---:|---:|---:|");
        line("raw JSON-RPC writer, 1 transaction (floor)", vips, floor_time);
        line(
            "ovn-vipd, 64 gRPC clients: all acknowledged (durable)",
            vips,
            acknowledged,
        );
        line("ovn-vipd, 64 gRPC clients: last virtual port in NB", vips, converged);
        line("ovn-nbctl, one call per VIP", nbctl_vips, nbctl_time);
        match ovsdbapp_time {
            Some(time) => line("ovsdbapp (Python), one transaction per VIP", vips, time),
            None => println!("| ovsdbapp (Python): not installed (scripts/install-deps bench) | {vips} | - | - | - |"),
        }
        println!(
            "\nacknowledgement latency under the burst: p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    if stored > 0 {
        let (single_p50, single_max) = runtime.block_on(single_change(stored));
        println!(
            "one AAP VIP from request to its port in NB, {stored} VIPs stored: p50 {:.1} ms, max {:.1} ms (10 samples)",
            single_p50.as_secs_f64() * 1e3,
            single_max.as_secs_f64() * 1e3
        );
    }
}
