//! IPAM and store figures: allocate+free per second by fullness, durable mutations per second
//! with 1, 16 and 64 concurrent writers (p50/p99 latency of the acknowledgement), and the time
//! and memory to open a store of 100,000 allocations and rebuild IPAM from it.
//!
//! `cargo bench --bench store` (`BENCH_DIR` for the durable runs' stores, default /var/tmp;
//! `STORE_BENCH_KEEP=DIR` keeps a copy of the 100,000-VIP store; `STORE_BENCH_OPEN=DIR` only
//! opens the store at DIR and reports).

mod machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovn_vipd::ipam::{AllocationRequest, Strategy, SubnetIpam, SubnetIpamConfig};
use ovn_vipd::model::{Subnet, VipSpec, VipType};
use ovn_vipd::registry::Registry;

fn ipam_rate(label: &str, config: SubnetIpamConfig, fill_fraction: f64, strategy: Strategy) {
    let mut ipam = SubnetIpam::new(SubnetIpamConfig {
        strategy: Strategy::Sequential,
        ..config.clone()
    })
    .unwrap();
    let total = ipam.free_v4().max(if config.cidr_v4.is_none() { 0 } else { 1 });
    let fill = if config.cidr_v4.is_some() {
        (total as f64 * fill_fraction) as usize
    } else {
        0
    };
    for index in 0..fill {
        ipam.allocate(&format!("fill{index}"), &AllocationRequest::default())
            .unwrap();
    }
    // Re-create with the measured strategy but the same fill: a strategy is fixed per subnet.
    let mut measured = SubnetIpam::new(SubnetIpamConfig { strategy, ..config }).unwrap();
    for index in 0..fill {
        let allocation = ipam.allocation_of(&format!("fill{index}")).copied().unwrap();
        measured
            .restore(
                &format!("fill{index}"),
                &AllocationRequest {
                    v4: allocation.v4,
                    v6: allocation.v6,
                    mac: Some(allocation.mac),
                },
            )
            .unwrap();
    }
    drop(ipam);
    let pairs = 500_000;
    let owner = "bench".to_string();
    let started = Instant::now();
    for _ in 0..pairs {
        measured.allocate(&owner, &AllocationRequest::default()).unwrap();
        measured.release(&owner);
    }
    let elapsed = started.elapsed();
    println!(
        "| {label} | {:?} | {:.0} % | {:.0} |",
        strategy,
        fill_fraction * 100.0,
        pairs as f64 / elapsed.as_secs_f64()
    );
}

fn vip(name: String) -> VipSpec {
    VipSpec {
        name,
        namespace: String::new(),
        subnet: "bench".into(),
        vip_type: VipType::Reserved,
        v4ip: None,
        v6ip: None,
        mac: None,
        selector: BTreeMap::new(),
    }
}

fn bench_subnet() -> Subnet {
    Subnet {
        name: "bench".into(),
        logical_switch: "bench".into(),
        cidr_v4: Some("10.0.0.0/8".parse().unwrap()),
        cidr_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: vec![],
        strategy: Strategy::Random,
        vpc: ovn_vipd::model::DEFAULT_VPC.into(),
    }
}

async fn durable_rate(writers: usize, duration: Duration) {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let (registry, _) = Registry::open(dir.path()).unwrap();
    registry.create_subnet(bench_subnet()).await.unwrap();
    let registry = Arc::new(registry);
    let deadline = Instant::now() + duration;
    let flushes_before = registry.store().flush_count();
    let cpu_before = machine::cpu_seconds();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut index = 0usize;
                while Instant::now() < deadline {
                    let name = format!("w{writer}-{index}");
                    let started = Instant::now();
                    registry.create_vip(vip(name)).await.unwrap();
                    latencies.push(started.elapsed());
                    index += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let cpu = machine::cpu_seconds() - cpu_before;
    latencies.sort();
    let count = latencies.len();
    let percentile = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    println!(
        "| {writers} | {count} | {:.0} | {:.2} | {:.2} | {} | {:.1} |",
        count as f64 / duration.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
        registry.store().flush_count() - flushes_before,
        cpu * 1e6 / count as f64
    );
    // What was timed happened: every acknowledged VIP is stored, once.
    let stored = registry.store().vips().count();
    assert!(stored >= count, "{count} acknowledged, {stored} stored");
}

/// Child mode: open the store, rebuild IPAM, report time and memory.
fn open_child(path: &str) {
    let started = Instant::now();
    let (registry, report) = Registry::open(std::path::Path::new(path)).unwrap();
    let elapsed = started.elapsed();
    assert!(report.is_clean());
    // Counted a page at a time: a whole `list_vips` copy would be part of the peak measured.
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let (page, more) = registry.vips_page(after.as_deref(), 1000, |_| true);
        count += page.len();
        after = page.last().map(|(vip, _)| vip.spec.name.clone());
        if !more {
            break;
        }
    }
    println!(
        "OPENED {} {:.3} {:.1}",
        count,
        elapsed.as_secs_f64(),
        machine::peak_rss_mib()
    );
}

async fn fill_store(path: &std::path::Path, count: usize) {
    let (registry, _) = Registry::open(path).unwrap();
    registry.create_subnet(bench_subnet()).await.unwrap();
    let registry = Arc::new(registry);
    let tasks: Vec<_> = (0..64)
        .map(|writer| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for index in (writer..count).step_by(64) {
                    registry.create_vip(vip(format!("v{index}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    if let Ok(path) = std::env::var("STORE_BENCH_OPEN") {
        open_child(&path);
        return;
    }
    machine::describe("cargo bench --bench store");
    println!("\n### IPAM: allocate+free pairs per second (500,000 pairs, one owner, MAC included)\n");
    println!("| subnet | strategy | full | pairs/s |");
    println!("|---|---|---:|---:|");
    let v4 = |cidr: &str| SubnetIpamConfig {
        cidr_v4: Some(cidr.parse().unwrap()),
        ..Default::default()
    };
    for strategy in [Strategy::Random, Strategy::Sequential] {
        ipam_rate("IPv4 /8", v4("10.0.0.0/8"), 0.0, strategy);
        ipam_rate("IPv4 /12", v4("10.0.0.0/12"), 0.5, strategy);
        ipam_rate("IPv4 /12", v4("10.0.0.0/12"), 0.99, strategy);
        ipam_rate(
            "IPv6 /64",
            SubnetIpamConfig {
                cidr_v6: Some("fd00::/64".parse().unwrap()),
                ..Default::default()
            },
            0.0,
            strategy,
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("\n### Durable VIP creations (IPAM + one atomic sled batch + shared fsync), 5 s each\n");
    println!("| writers | creations | per second | p50 ms | p99 ms | flushes | CPU µs per creation |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for writers in [1, 16, 64] {
        runtime.block_on(durable_rate(writers, Duration::from_secs(5)));
    }

    println!("\n### Open and rebuild with 100,000 VIP allocations (fresh process)\n");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    runtime.block_on(fill_store(dir.path(), 100_000));
    // STORE_BENCH_KEEP=DIR: also copy the filled store there, to profile its open alone
    // (`STORE_BENCH_OPEN=DIR heaptrack target/release/deps/store-*`).
    if let Ok(keep) = std::env::var("STORE_BENCH_KEEP") {
        let status = std::process::Command::new("cp")
            .args(["-a", &dir.path().display().to_string(), &keep])
            .status()
            .unwrap();
        assert!(status.success(), "copying the store to {keep}");
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env("STORE_BENCH_OPEN", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|line| line.starts_with("OPENED"))
        .unwrap_or("OPENED ? ? ?");
    let words: Vec<&str> = line.split_whitespace().collect();
    println!("| VIPs | open + rebuild s | peak RSS MiB |");
    println!("|---:|---:|---:|");
    println!("| {} | {} | {} |", words[1], words[2], words[3]);
}
