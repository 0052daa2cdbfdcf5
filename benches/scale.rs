//! Scale: one daemon (the release binary, as a process) holding SCALE_BENCH_VIPS AAP VIPs (each a
//! virtual port in NB) and SCALE_BENCH_PODS bound pods (each a parent of one VIP). Measured: the
//! restart to serving and to converged (READY=1 over systemd's notify protocol comes after the
//! first full pass; the NB transaction counter proves it was a no-op diff), resident memory, and
//! the latency of one VIP change at that size.
//!
//! `cargo bench --bench scale` (SCALE_BENCH_VIPS=100000, SCALE_BENCH_PODS=10000,
//! SCALE_BENCH_CHANGES=100 single changes timed; SCALE_BENCH_LOG sets the daemon's log filter).
//! The restart's stage lines (store open, NB monitor reply, first full pass, ready) are printed
//! from the daemon's log.

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{http_get, plain_channel, sample, start, DaemonProcess};
use common::{reserve_port, OvsdbServer};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::ovsdb::{Atom, Condition, Connection, ConnectionOptions, Mutation, Operation, Remote, Row, Value};
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn count(connection: &Connection, conditions: Vec<Condition>) -> usize {
    let select = Operation::Select {
        table: "Logical_Switch_Port".into(),
        conditions,
        columns: Some(vec!["name".into()]),
    };
    match connection.transact("OVN_Northbound", &[select], None).await {
        Ok(results) => results[0].rows.as_ref().map_or(0, Vec::len),
        Err(_) => 0,
    }
}

/// Runs `make(index)` for every index with 64 concurrent clients.
async fn fill<F, Fut>(total: usize, make: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (next, make) = (next.clone(), make.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    make(index).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("fill task");
    }
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let vips = env_number("SCALE_BENCH_VIPS", 100_000);
    let pods = env_number("SCALE_BENCH_PODS", 10_000);
    let changes = env_number("SCALE_BENCH_CHANGES", 100).max(1);
    machine::describe("cargo bench --bench scale");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nb = OvsdbServer::nb_quiet(dir.path());
    // The daemon logs at warn here (its listening lines hidden): ports held for the run.
    let reserved = (reserve_port(), reserve_port());
    let (port, metrics_port) = (reserved.0.port, reserved.1.port);
    let args = vec![
        format!("--ovn-nb={}", nb.unix_remote()),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--listen=tcp:127.0.0.1:{port}"),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
        format!(
            "--log={}",
            // The stage lines of a restart are at info; everything else at warn.
            std::env::var("SCALE_BENCH_LOG").unwrap_or_else(|_| {
                "warn,ovn_vipd::daemon=info,ovn_vipd::ovsdb::client=info,ovn_vipd::reconcile=info".into()
            })
        ),
    ];
    let daemon = start(dir.path(), &args, &[]);
    let (probe, _notifications) = runtime.block_on(async {
        Connection::open(
            &Remote::parse(&nb.unix_remote()).unwrap(),
            None,
            &ConnectionOptions::default(),
        )
        .await
        .expect("probe connection")
    });
    let filled = Instant::now();
    runtime.block_on(async {
        let channel = plain_channel(port).await;
        SubnetServiceClient::new(channel.clone())
            .create_subnet(common::subnet_request("scale", "10.0.0.0/8", ""))
            .await
            .expect("subnet");
        let vip_channel = channel.clone();
        fill(vips, move |index| {
            let mut client = VipServiceClient::new(vip_channel.clone());
            async move {
                client
                    .create_vip(pb::CreateVipRequest {
                        vip: Some(pb::Vip {
                            name: format!("vip-{index}"),
                            subnet: "scale".into(),
                            namespace: "default".into(),
                            ..Default::default()
                        }),
                    })
                    .await
                    .expect("create vip");
            }
        })
        .await;
        let pod_channel = channel.clone();
        fill(pods, move |index| {
            let mut client = PodServiceClient::new(pod_channel.clone());
            async move {
                client
                    .bind_pod(pb::BindPodRequest {
                        namespace: "default".into(),
                        name: format!("pod-{index}"),
                        annotations: HashMap::from([("ovn.kubernetes.io/aaps".to_string(), format!("vip-{index}"))]),
                        nics: vec![pb::NicRequest {
                            subnet: "scale".into(),
                            interface: "eth0".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .await
                    .expect("bind pod");
            }
        })
        .await;
        let expected = vips + pods;
        while count(&probe, vec![]).await < expected {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    println!(
        "filled: {vips} AAP VIPs and {pods} bound pods through gRPC, converged in NB, in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let filled_rss = rss_mib(daemon.pid(), "VmRSS:");
    println!("resident memory after the fill (VmRSS): {filled_rss:.0} MiB");
    let mut daemon = daemon;
    daemon.signal("TERM");
    daemon.wait(Duration::from_secs(60));

    // Restart, as systemd would start it.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let daemon: DaemonProcess = start(dir.path(), &args, &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let mut serving = None;
    let mut ready = None;
    let mut buffer = [0u8; 1024];
    while ready.is_none() {
        if serving.is_none() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            serving = Some(started.elapsed());
        }
        if let Ok(length) = notify.recv(&mut buffer) {
            if String::from_utf8_lossy(&buffer[..length])
                .lines()
                .any(|line| line == "READY=1")
            {
                ready = Some(started.elapsed());
            }
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never ready");
    }
    let serving = serving.unwrap_or(ready.unwrap_or_default());
    let ready = ready.unwrap_or_default();
    let (_, text) = http_get(metrics_port, "/metrics");
    let transactions = sample(&text, "ovn_vipd_nb_transactions_total").unwrap_or(-1.0);
    let rss = rss_mib(daemon.pid(), "VmRSS:");
    let peak = rss_mib(daemon.pid(), "VmHWM:");
    // The server's part of the restart's "NB download" stage: the same monitor request as the
    // daemon's (its tables and columns, from scratch) on a bare connection, timed to the whole
    // reply read (its text split off, not parsed).
    let download_floor = runtime.block_on(async {
        let requests: serde_json::Map<String, serde_json::Value> = ovn_vipd::nb::REQUIRED_COLUMNS
            .iter()
            .map(|(table, columns)| (table.to_string(), serde_json::json!([{ "columns": columns }])))
            .collect();
        let began = Instant::now();
        let (_, _, updates) = probe
            .monitor_cond_since_unparsed(
                "OVN_Northbound",
                serde_json::json!("download-floor"),
                serde_json::Value::Object(requests),
                "00000000-0000-0000-0000-000000000000",
            )
            .await
            .expect("monitor_cond_since");
        let elapsed = began.elapsed();
        assert!(updates.get().len() > vips * 100, "the reply holds every port");
        probe
            .monitor_cancel(serde_json::json!("download-floor"))
            .await
            .expect("monitor_cancel");
        elapsed
    });

    // One change at this size.
    let watcher = runtime.block_on(async {
        let watcher = ovn_vipd::ovsdb::Client::start(ovn_vipd::nb::client_config(
            Remote::parse_list(&nb.unix_remote()).unwrap(),
        ));
        watcher.wait_connected(Duration::from_secs(60)).await.expect("watcher");
        watcher
    });
    let samples = runtime.block_on(async {
        let channel = plain_channel(port).await;
        let mut client = VipServiceClient::new(channel);
        let mut samples = Vec::new();
        // Per change: the durable acknowledgement (the store's part) and the port seen in NB.
        let mut acks = Vec::new();
        for round in 0..changes {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let name = format!("single-{round}");
            let began = Instant::now();
            client
                .create_vip(pb::CreateVipRequest {
                    vip: Some(pb::Vip {
                        name: name.clone(),
                        subnet: "scale".into(),
                        namespace: "default".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("create");
            let acknowledged = began.elapsed();
            // Seen through a monitor (as ovn-northd sees NB), not by polling selects, which
            // would scan the table in ovsdb-server and slow down the very write being timed.
            while watcher.cache().find(&ovn_vipd::nb::port_by_name(), &name).is_empty() {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            samples.push(began.elapsed());
            acks.push(acknowledged);
        }
        let slowest: Vec<String> = {
            let mut indexed: Vec<(usize, Duration)> = samples.iter().copied().enumerate().collect();
            indexed.sort_by_key(|(_, sample)| std::cmp::Reverse(*sample));
            indexed
                .iter()
                .take(5)
                .map(|(index, sample)| {
                    format!(
                        "#{index}: {:.1} ms (acknowledged after {:.1} ms)",
                        sample.as_secs_f64() * 1e3,
                        acks[*index].as_secs_f64() * 1e3
                    )
                })
                .collect()
        };
        println!("slowest changes: {}", slowest.join("; "));
        acks.sort();
        println!(
            "durable acknowledgement of those changes: p50 {:.1} ms, max {:.1} ms",
            acks[acks.len() / 2].as_secs_f64() * 1e3,
            acks[acks.len() - 1].as_secs_f64() * 1e3
        );
        samples.sort();
        samples
    });
    // The floor for one change at this size: the same row written by a raw transaction (insert the
    // port, add it to the switch's ports), timed to its reply.
    let floor = runtime.block_on(async {
        let mut samples = Vec::new();
        for round in 0..10 {
            let name = format!("floor-{round}");
            let operations = vec![
                Operation::Insert {
                    table: "Logical_Switch_Port".into(),
                    row: Row::from([
                        ("name".to_string(), Value::string(name.clone())),
                        ("type".to_string(), Value::string("virtual")),
                        (
                            "options".to_string(),
                            Value::map([("virtual-ip", format!("10.255.0.{}", round + 2))]),
                        ),
                    ]),
                    uuid_name: Some("port".into()),
                },
                Operation::Mutate {
                    table: "Logical_Switch".into(),
                    conditions: vec![Condition::equal("name", Value::string("scale"))],
                    mutations: vec![Mutation::insert("ports", Value::set([Atom::named_uuid("port")]))],
                },
            ];
            let began = Instant::now();
            probe
                .transact("OVN_Northbound", &operations, None)
                .await
                .expect("floor transaction");
            samples.push(began.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples.sort();
        samples
    });
    println!("\n| at {vips} VIPs + {pods} pods | measured | goal |");
    println!("|---|---:|---:|");
    println!("| restart to serving gRPC | {:.2} s | |", serving.as_secs_f64());
    println!(
        "| restart to converged (READY=1 after the first full pass) | {:.2} s | < 2 s |",
        ready.as_secs_f64()
    );
    println!("| NB transactions in that first pass (0 = no-op diff) | {transactions} | 0 |");
    println!(
        "| floor of the NB download: the same monitor reply on a bare connection | {:.2} s | |",
        download_floor.as_secs_f64()
    );
    println!("| resident memory after the restart (VmRSS) | {rss:.0} MiB | < 200 MB |");
    println!("| peak resident memory during the restart (VmHWM) | {peak:.0} MiB | |");
    let quantile = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "| one VIP change to its port in NB ({} changes) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | p99 < 20 ms |",
        samples.len(),
        quantile(0.5).as_secs_f64() * 1e3,
        quantile(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "| floor: one raw insert + switch mutate on the same NB | p50 {:.1} ms, max {:.1} ms | |",
        floor[floor.len() / 2].as_secs_f64() * 1e3,
        floor[floor.len() - 1].as_secs_f64() * 1e3
    );
    // What the restart's time went to, from the daemon's own stage lines.
    let log = daemon.stderr();
    println!("\nrestart stages (daemon log):");
    for line in log.lines().filter(|line| {
        [
            "store open",
            "OVSDB connection ready",
            "full pass",
            "first NB sync done",
        ]
        .iter()
        .any(|stage| line.contains(stage))
    }) {
        println!("  {line}");
    }
    if std::env::var("SCALE_BENCH_LOG").is_ok() {
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            println!("{line}");
        }
    }
    drop(daemon);
}
