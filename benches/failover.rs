//! AAP failover time across chassis, measured as ../shared/docs/MULTICHASSIS.md measures it: the
//! two-chassis harness (`common::chassis`), an AAP VIP with parents on chassis 1 and 2, four
//! clients pinging it every 10 ms (same subnet on both chassis, routed through a logical router
//! on both chassis), and the address moved keepalived-style (`ip addr del` on the holder,
//! `ip addr add` + gratuitous ARP with the VIP as sender on the other parent), alternately.
//!
//! Every echo reply the parents send is captured on the parents themselves (an `AF_PACKET`
//! socket on `eth0`, outgoing packets, one clock for both), so for each client: outage = first
//! reply from the new holder - last reply from the old holder before it; and reaction = first
//! reply from the new holder - the moment the address was removed from the old one. Pods are
//! made through `ovn-vipd-cni` on their chassis, like every pod of the tests.
//!
//! `FAILOVER_BENCH_ROUNDS` (default 10) failovers. Needs root. The daemon is not on the
//! failover path (ovn-controller binds the virtual port on the GARP), so the figures are OVN's.

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::chassis::TwoChassis;
use common::ovn::{Pod, PodSpec};
use common::wait_until;
use ovn_vipd::api::proto::v1 as pb;

/// Prints `<time> <client address>` for each ICMP echo reply from `argv[1]` leaving `eth0`,
/// for `argv[2]` seconds (outgoing packets reach only `ETH_P_ALL` packet sockets).
const SNIFFER: &str = r#"
import socket, sys, time
vip = socket.inet_aton(sys.argv[1]); end = time.time() + float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(('eth0', 3)); s.settimeout(0.1)
out = []
while time.time() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    t = time.time()
    if addr[2] != 4 or len(data) < 35 or data[12:14] != b'\x08\x00' or data[23] != 1 or data[26:30] != vip:
        continue
    ihl = (data[14] & 15) * 4
    if data[14 + ihl] == 0:
        out.append('%.6f %s' % (t, socket.inet_ntoa(data[30:34])))
print('\n'.join(out))
"#;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn in_pod(pod: &Pod, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ip netns exec")
}

fn create_vip(two: &TwoChassis, vip: pb::Vip) -> pb::VipStatus {
    let mut vips = pb::vip_service_client::VipServiceClient::new(two.channel());
    two.runtime
        .block_on(vips.create_vip(pb::CreateVipRequest { vip: Some(vip) }))
        .expect("create vip")
        .into_inner()
        .status
        .expect("status")
}

fn stats(samples: &mut [f64]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    format!(
        "{:.1} ms | {:.1} ms | {:.1} ms | {}",
        samples[0] * 1e3,
        median * 1e3,
        samples[samples.len() - 1] * 1e3,
        samples.len()
    )
}

fn main() {
    let rounds: usize = std::env::var("FAILOVER_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    machine::describe("cargo bench --profile dev --bench failover");
    let mut two = TwoChassis::start();
    two.create_subnet(common::subnet_request("aap", "10.16.0.0/24", ""));
    two.create_subnet(common::subnet_request("routed", "10.26.0.0/24", ""));
    two.add_router_port("aap", "04:00:00:00:16:01", &["10.16.0.1/24"]);
    two.add_router_port("routed", "04:00:00:00:26:01", &["10.26.0.1/24"]);
    let vip = create_vip(
        &two,
        pb::Vip {
            name: "vip-aap".into(),
            subnet: "aap".into(),
            namespace: "default".into(),
            selector: vec!["app: aap1".into()],
            ..Default::default()
        },
    );
    let parent = |name: &str| {
        PodSpec::new(name, "aap")
            .label("app", "aap1")
            .annotation("ovn.kubernetes.io/aaps", "vip-aap")
    };
    let parents = [two.add_pod(parent("p1"), 1), two.add_pod(parent("p2"), 2)];
    // (pod, kind): c1@2 and c2@1 on the VIP's subnet, c3@1 and c4@2 routed.
    let clients = [
        (two.add_pod(PodSpec::new("c1", "aap"), 2), "same subnet"),
        (two.add_pod(PodSpec::new("c2", "aap"), 1), "same subnet"),
        (two.add_pod(PodSpec::new("c3", "routed"), 1), "routed"),
        (two.add_pod(PodSpec::new("c4", "routed"), 2), "routed"),
    ];
    let address = vip.v4ip.clone();
    let holder = |index: usize| format!("{}.default", parents[index].spec.name);
    parents[0].claim(&address, 24);
    wait_until(
        "p1 holds the VIP and every client reaches it",
        Duration::from_secs(60),
        || two.virtual_parent("vip-aap") == holder(0) && clients.iter().all(|(client, _)| client.ping(&address)),
    );

    let mut outage: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut reaction: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut sb_commit = Vec::new();
    let mut lost = Vec::new();
    for round in 0..rounds {
        let (from, to) = (round % 2, 1 - round % 2);
        let window = "6";
        let sniffers: Vec<Child> = parents
            .iter()
            .map(|pod| in_pod(pod, &["python3", "-c", SNIFFER, &address, window]))
            .collect();
        let pingers: Vec<Child> = clients
            .iter()
            .map(|(client, _)| in_pod(client, &["ping", "-q", "-i", "0.01", "-W", "1", "-w", "5", &address]))
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let released = now();
        let started = Instant::now();
        parents[from].release(&address, 24);
        // claim() adds the address and sends the gratuitous ARP (sender = VIP) at once; its
        // arping then waits for a second GARP, which the measurement does not need.
        std::thread::scope(|scope| {
            scope.spawn(|| parents[to].claim(&address, 24));
            wait_until("SB follows the GARP", Duration::from_secs(10), || {
                two.virtual_parent("vip-aap") == holder(to)
            });
            sb_commit.push(started.elapsed().as_secs_f64());
        });
        let replies: Vec<Vec<(f64, String)>> = sniffers
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().expect("sniffer");
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter_map(|line| {
                        let (time, client) = line.split_once(' ')?;
                        Some((time.parse().ok()?, client.to_string()))
                    })
                    .collect()
            })
            .collect();
        for mut pinger in pingers {
            let _ = pinger.kill();
            let _ = pinger.wait();
        }
        let mut this_round = Vec::new();
        for (client, kind) in &clients {
            let ip = client.ip(false);
            let first_new = replies[to]
                .iter()
                .filter(|(time, who)| *who == ip && *time >= released)
                .map(|(time, _)| *time)
                .fold(f64::INFINITY, f64::min);
            let last_old = replies[from]
                .iter()
                .filter(|(time, who)| *who == ip && *time < first_new)
                .map(|(time, _)| *time)
                .fold(f64::NEG_INFINITY, f64::max);
            if first_new.is_finite() && last_old.is_finite() {
                outage.entry(*kind).or_default().push(first_new - last_old);
                reaction.entry(*kind).or_default().push(first_new - released);
                // Pings every 10 ms: the replies missing in the gap.
                lost.push(((first_new - last_old) / 0.01).round() as i64 - 1);
                this_round.push(format!(
                    "{}({kind}) {:.1} ms",
                    client.spec.name,
                    (first_new - last_old) * 1e3
                ));
            } else {
                println!(
                    "round {round}: {} got no reply from the new holder within the window",
                    client.spec.name
                );
            }
        }
        println!(
            "round {}: {} -> {}: outage {}",
            round + 1,
            parents[from].spec.name,
            parents[to].spec.name,
            this_round.join(", ")
        );
    }
    println!();
    println!("| step | min | median | max | samples |");
    println!("|---|---|---|---|---|");
    println!(
        "| `ip addr del` on the old holder -> SB virtual_parent = new holder (seen by a 20 ms ovn-sbctl poll) | {} |",
        stats(&mut sb_commit)
    );
    for kind in ["same subnet", "routed"] {
        println!(
            "| `ip addr del` -> first echo reply from the new holder, {kind} clients | {} |",
            stats(reaction.entry(kind).or_default())
        );
    }
    for kind in ["same subnet", "routed"] {
        println!(
            "| outage (last reply from the old holder -> first from the new), {kind} clients | {} |",
            stats(outage.entry(kind).or_default())
        );
    }
    lost.sort();
    println!(
        "pings lost per client and failover (10 ms interval): min {} median {} max {}",
        lost.first().unwrap_or(&0),
        lost.get(lost.len() / 2).unwrap_or(&0),
        lost.last().unwrap_or(&0)
    );
}
