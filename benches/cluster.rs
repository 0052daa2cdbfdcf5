//! Clustered ovn-vipd on three central hosts (issue #14), measured with the harness of
//! `tests/cluster_hosts.rs` (`common::central`: network namespaces on one bridge, each with an
//! NB RAFT member, an `OVN_VIPD` RAFT member and the `ovn-vipd` binary):
//!
//! 1. Durable creations per second: `CLUSTER_BENCH_CLIENTS` (default 16) clients each creating
//!    AAP VIPs back to back on the active daemon for `CLUSTER_BENCH_SECONDS` (default 10),
//!    standalone (sled, the NB lock only) and clustered (`--cluster-db`: acknowledged after the
//!    RAFT commit), on the same machine in the same run, alternately `CLUSTER_BENCH_REPEATS`
//!    (default 3) times each; the ratio of the means clustered / standalone.
//! 2. Takeover: three clients keep creating VIPs through all three addresses (src/client.rs);
//!    the active's daemon (SIGKILL of the daemon alone) or its whole host (SIGKILL of the daemon
//!    and both RAFT members) is killed; takeover = the kill -> the first acknowledgement of a
//!    call sent after it (so served by a live daemon; an upper bound by one call). `CLUSTER_BENCH_ROUNDS` (default 5) of each; the host comes back between rounds.
//!
//! Needs root. Run: `cargo bench --profile dev --bench cluster`.

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::central::{Central, Mode};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::client::Daemons;
use pb::subnet_service_client::SubnetServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::Code;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn vip(name: &str) -> pb::Vip {
    pb::Vip {
        name: name.into(),
        subnet: "ovn-default".into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

async fn create_subnet(central: &Central) {
    let mut daemons = central.client(1, Duration::from_secs(30)).await;
    daemons
        .call(
            common::subnet_request("ovn-default", "10.16.0.0/16", ""),
            |channel, request| async move { SubnetServiceClient::new(channel).create_subnet(request).await },
        )
        .await
        .expect("create the subnet");
}

/// Creates `name` until it is acknowledged (a retry that finds it made counts as done); after a
/// failed call the client connects again (`settings`), as a new vipctl or CNI call would.
/// Returns when the acknowledged call was sent.
async fn create(daemons: &mut Daemons, settings: &ovn_vipd::client::Settings, name: &str) -> Instant {
    let mut retry = false;
    let start = Instant::now();
    loop {
        let sent = Instant::now();
        let result = daemons
            .call(
                pb::CreateVipRequest { vip: Some(vip(name)) },
                |channel, request| async move { VipServiceClient::new(channel).create_vip(request).await },
            )
            .await;
        match result {
            Ok(_) => return sent,
            Err(status) if retry && status.code() == Code::AlreadyExists => return sent,
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
                ) && start.elapsed() < Duration::from_secs(120) =>
            {
                retry = true;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(fresh) = Daemons::connect(settings.clone()).await {
                    *daemons = fresh;
                }
            }
            Err(status) => panic!("create {name}: {status}"),
        }
    }
}

/// Creations per second on the active daemon with `clients` concurrent clients.
async fn throughput(mode: Mode, clients: usize, seconds: u64) -> f64 {
    let central = tokio::task::block_in_place(|| Central::start(mode));
    create_subnet(&central).await;
    let active = tokio::task::block_in_place(|| central.wait_for_active(Duration::from_secs(30)));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut daemons = central.client(active, Duration::from_secs(10)).await;
        let mut settings = central.client_settings(Duration::from_secs(10));
        settings.addresses.rotate_left(active - 1);
        tasks.push(tokio::spawn(async move {
            let mut made = 0u64;
            while Instant::now() < deadline {
                create(&mut daemons, &settings, &format!("t{client}-{made}")).await;
                made += 1;
            }
            made
        }));
    }
    let mut made = 0;
    for task in tasks {
        made += task.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = made as f64 / elapsed;
    println!("{mode:?}: {made} VIPs created by {clients} clients in {elapsed:.1} s: {rate:.0}/s");
    drop(central);
    rate
}

/// Takeover times (seconds) over `rounds` kills of the active (its whole host with `host`).
async fn takeovers(central: &mut Central, rounds: u64, host: bool) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    // Each acknowledged call: when it was sent, when it was acknowledged.
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..3 {
        let mut daemons = central.client(client + 1, Duration::from_secs(2)).await;
        let mut settings = central.client_settings(Duration::from_secs(2));
        settings.addresses.rotate_left(client);
        let (stop, acks) = (stop.clone(), acks.clone());
        let prefix = format!("{}{client}-{}", if host { "h" } else { "d" }, std::process::id());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let sent = create(&mut daemons, &settings, &format!("{prefix}-{i}")).await;
                acks.lock().unwrap().push((sent, Instant::now()));
                i += 1;
            }
        }));
    }
    let count = |acks: &Mutex<Vec<(Instant, Instant)>>| acks.lock().unwrap().len();
    let mut times = Vec::new();
    for round in 0..rounds {
        let before = count(&acks);
        common::wait_until_async("writes flowing", Duration::from_secs(60), || {
            count(&acks) >= before + 20
        })
        .await;
        let active = tokio::task::block_in_place(|| central.wait_for_active(Duration::from_secs(30)));
        let killed = Instant::now();
        tokio::task::block_in_place(|| {
            if host {
                central.kill_host(active)
            } else {
                central.kill_daemon(active)
            }
        });
        let mut first = None;
        common::wait_until_async("a write after the kill", Duration::from_secs(60), || {
            // A call sent after the kill: served by a daemon alive after it.
            first = acks
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _)| *sent >= killed)
                .map(|(_, acked)| *acked)
                .min();
            first.is_some()
        })
        .await;
        let took = first.map(|ack| (ack - killed).as_secs_f64()).unwrap_or_default();
        let next = tokio::task::block_in_place(|| central.wait_for_active(Duration::from_secs(30)));
        println!(
            "round {}: {} of host {active} killed -> first acknowledged write after {:.0} ms (active now host {next})",
            round + 1,
            if host { "every process" } else { "the daemon" },
            took * 1e3
        );
        times.push(took);
        // Back as a standby before the next round.
        tokio::task::block_in_place(|| {
            if host {
                central.start_host(active);
                for member in [&central.host(active).nb, &central.host(active).cluster] {
                    common::wait_until("the member rejoins", Duration::from_secs(60), || {
                        member.cluster_status().contains("Status: cluster member")
                    });
                }
            } else {
                central.start_daemon(active);
            }
        });
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client");
    }
    times
}

fn summary(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    if times.is_empty() {
        return "no samples".into();
    }
    format!(
        "{:.0} ms | {:.0} ms | {:.0} ms | {}",
        times[0] * 1e3,
        times[times.len() / 2] * 1e3,
        times[times.len() - 1] * 1e3,
        times.len()
    )
}

fn main() {
    machine::describe("cargo bench --profile dev --bench cluster");
    let rounds = setting("CLUSTER_BENCH_ROUNDS", 5);
    let seconds = setting("CLUSTER_BENCH_SECONDS", 10);
    let clients = setting("CLUSTER_BENCH_CLIENTS", 16) as usize;
    let repeats = setting("CLUSTER_BENCH_REPEATS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Alternately, so that the machine's other load weighs on both modes alike.
        let (mut standalone_runs, mut clustered_runs) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            standalone_runs.push(throughput(Mode::Standalone, clients, seconds).await);
            clustered_runs.push(throughput(Mode::Clustered, clients, seconds).await);
        }
        let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len().max(1) as f64;
        let (standalone, clustered) = (mean(&standalone_runs), mean(&clustered_runs));
        let mut central = tokio::task::block_in_place(|| Central::start(Mode::Clustered));
        create_subnet(&central).await;
        let mut daemon_kills = takeovers(&mut central, rounds, false).await;
        let mut host_kills = takeovers(&mut central, rounds, true).await;
        drop(central);
        println!();
        println!("| measurement | result |");
        println!("|---|---|");
        let runs = |runs: &[f64]| runs.iter().map(|rate| format!("{rate:.0}")).collect::<Vec<_>>().join(", ");
        println!(
            "| durable creations/s, standalone ({clients} clients, {seconds} s, mean of {repeats}) | {standalone:.0} ({}) |",
            runs(&standalone_runs)
        );
        println!(
            "| durable creations/s, clustered ({clients} clients, {seconds} s, mean of {repeats}) | {clustered:.0} ({}) |",
            runs(&clustered_runs)
        );
        println!("| clustered / standalone (goal >= 0.5) | {:.2} |", clustered / standalone);
        println!();
        println!("| takeover (kill -> first acknowledgement of a call sent after it) | min | median | max | samples |");
        println!("|---|---|---|---|---|");
        println!("| SIGKILL of the active daemon | {} |", summary(&mut daemon_kills));
        println!("| SIGKILL of every process of the active's host | {} |", summary(&mut host_kills));
    });
}
