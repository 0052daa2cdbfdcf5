//! List paging (AIP-158) through the real daemon: every List pages, a listing under concurrent
//! creations and deletions returns every object that existed throughout exactly once, bad page
//! tokens and sizes are INVALID_ARGUMENT naming the field, and vipctl and grpcurl page through.
//!
//! The acceptance's 100,000 VIPs:
//! `hundred_thousand_vips_through_vipctl_and_grpcurl_exactly_once_while_writes_go_on` (in CI:
//! the store is filled through the registry of the stopped daemon, not by 100,000 RPCs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestDaemon;
use futures::StreamExt;
use ovn_vipd::api::proto::v1 as pb;
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;
use tonic::transport::Channel;
use tonic::Code;

fn vip(name: &str, subnet: &str) -> pb::CreateVipRequest {
    common::requests::create_vip(common::requests::vip(name, subnet))
}

/// Creates the named VIPs, a few requests at a time.
async fn create_vips(channel: &Channel, subnet: &str, names: Vec<String>) {
    futures::stream::iter(names)
        .map(|name| {
            let mut client = VipServiceClient::new(channel.clone());
            let request = vip(&name, subnet);
            async move {
                client
                    .create_vip(request)
                    .await
                    .unwrap_or_else(|error| panic!("create {name}: {error}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Every VIP name of a listing, a page of `page_size` at a time, and the number of pages.
async fn list_all(client: &mut VipServiceClient<Channel>, page_size: i32) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_vips(pb::ListVipsRequest {
                page_size,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list page")
            .into_inner();
        pages += 1;
        let limit = if page_size == 0 {
            500
        } else {
            page_size.min(1000) as usize
        };
        assert!(page.vips.len() <= limit, "a page larger than asked");
        names.extend(page.vips.into_iter().map(|vip| vip.name));
        if page.next_page_token.is_empty() {
            return (names, pages);
        }
        page_token = page.next_page_token;
    }
}

fn assert_invalid(error: &tonic::Status, field: &str) {
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains(field), "{field} not named: {error:?}");
}

/// Lists `lasting` VIPs in pages while a writer creates and deletes others around them (before
/// and after the listing's cursor), and checks that each lasting VIP is listed exactly once.
async fn list_under_churn(lasting: usize, page_size: i32) {
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    SubnetServiceClient::new(channel.clone())
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/14", ""))
        .await
        .expect("subnet");
    // Lasting VIPs "v-000123-a", doomed ones "v-000123-b" (deleted during the listing);
    // churn creates "v-000123-c" during it. All three sort next to each other.
    let lasting_names: Vec<String> = (0..lasting).map(|index| format!("v-{index:06}-a")).collect();
    let doomed_names: Vec<String> = (0..lasting).step_by(3).map(|index| format!("v-{index:06}-b")).collect();
    create_vips(&channel, "ovn-default", lasting_names.clone()).await;
    create_vips(&channel, "ovn-default", doomed_names.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let channel = channel.clone();
        let stop = stop.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut client = VipServiceClient::new(channel);
            let mut writes = 0usize;
            // From the end and the start alike, so writes land on both sides of the cursor.
            let mut doomed = doomed_names.into_iter();
            let mut index = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let step = (index / 2) % lasting;
                let spot = if index % 2 == 0 { step } else { lasting - 1 - step };
                let name = format!("v-{spot:06}-c");
                client
                    .create_vip(vip(&name, "ovn-default"))
                    .await
                    .expect("churn create");
                let next = if index % 2 == 0 {
                    doomed.next_back()
                } else {
                    doomed.next()
                };
                if let Some(name) = next {
                    client
                        .delete_vip(pb::DeleteVipRequest { name, revision: 0 })
                        .await
                        .expect("churn delete");
                }
                writes += 2;
                index += 1;
                progress.store(writes, Ordering::Relaxed);
            }
            writes
        })
    };
    // The writer is under way before the listing starts and goes on during it.
    common::wait_until_async("the writer to start", Duration::from_secs(30), || {
        progress.load(Ordering::Relaxed) >= 10
    })
    .await;
    let before = progress.load(Ordering::Relaxed);
    let mut client = VipServiceClient::new(channel.clone());
    let (names, pages) = list_all(&mut client, page_size).await;
    let writes = progress.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "listed more than once: {repeated:?}");
    let missing: Vec<_> = lasting_names
        .iter()
        .filter(|name| !counts.contains_key(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lasting VIPs missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(pages > 1, "one page only");
    assert!(writes > 0, "no write happened during the listing");
    eprintln!(
        "{lasting} lasting VIPs in {pages} pages, {writes} concurrent writes, {} listed",
        names.len()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_under_concurrent_writes_returns_every_lasting_vip_exactly_once() {
    list_under_churn(3000, 50).await;
}

/// Fills the stopped daemon's store through the registry, as the daemon would (IPAM, records,
/// one durable batch per VIP, many at a time so they share flushes): 100,000 creations in
/// seconds, where as many RPCs take minutes.
async fn fill_store(daemon: &mut TestDaemon, subnet: &str, names: Vec<String>) {
    use ovn_vipd::model::{VipSpec, VipType};
    daemon.stop_daemon_only().await;
    let started = std::time::Instant::now();
    let count = names.len();
    {
        let path = daemon.dir.path().join("data").join("store");
        let (registry, _) = ovn_vipd::registry::Registry::open(&path).expect("open the store");
        let registry = Arc::new(registry);
        futures::stream::iter(names)
            .map(|name| {
                let registry = registry.clone();
                async move {
                    let spec = VipSpec {
                        name,
                        namespace: String::new(),
                        subnet: subnet.to_string(),
                        vip_type: VipType::Reserved,
                        v4ip: None,
                        v6ip: None,
                        mac: None,
                        selector: Default::default(),
                    };
                    registry.create_vip(spec).await.expect("create in the store");
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<()>>()
            .await;
        registry.flush().expect("flush");
    }
    eprintln!("stored {count} VIPs in {:.1} s", started.elapsed().as_secs_f64());
    daemon.restart_daemon_only().await;
}

/// Churn for a listing: creates `v-NNNNNN-c` and deletes the doomed names, alternately from
/// both ends of the key range, a pair every `pause`, until stopped; counts its writes.
fn churn(
    channel: Channel,
    lasting: usize,
    doomed_names: Vec<String>,
    pause: Duration,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut client = VipServiceClient::new(channel);
        let mut writes = 0usize;
        let mut doomed = doomed_names.into_iter();
        let mut index = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let step = (index / 2) % lasting;
            let spot = if index % 2 == 0 { step } else { lasting - 1 - step };
            client
                .create_vip(vip(&format!("v-{spot:06}-c"), "ovn-default"))
                .await
                .expect("churn create");
            let next = if index % 2 == 0 {
                doomed.next_back()
            } else {
                doomed.next()
            };
            if let Some(name) = next {
                client
                    .delete_vip(pb::DeleteVipRequest { name, revision: 0 })
                    .await
                    .expect("churn delete");
            }
            writes += 2;
            index += 1;
            progress.store(writes, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
        }
        writes
    })
}

/// Every lasting name listed exactly once.
fn assert_exactly_once(listed: &[String], lasting: &[String], how: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in listed {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).take(5).collect();
    assert!(repeated.is_empty(), "{how}: listed more than once: {repeated:?}");
    let missing: Vec<_> = lasting
        .iter()
        .filter(|name| !counts.contains_key(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{how}: {} lasting VIPs missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The acceptance (issue #17): 100,000 lasting VIPs (and 10,000 deleted, others created while
/// it lists) through `vipctl get vip` and through grpcurl following `nextPageToken`, each
/// lasting VIP exactly once. The store is filled directly (`fill_store`) so it runs in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_vips_through_vipctl_and_grpcurl_exactly_once_while_writes_go_on() {
    let test_started = std::time::Instant::now();
    let lasting = 100_000;
    let mut daemon = TestDaemon::start_with(true).await;
    SubnetServiceClient::new(daemon.channel().await)
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/14", ""))
        .await
        .expect("subnet");
    let lasting_names: Vec<String> = (0..lasting).map(|index| format!("v-{index:06}-a")).collect();
    let doomed_names: Vec<String> = (0..lasting)
        .step_by(10)
        .map(|index| format!("v-{index:06}-b"))
        .collect();
    let mut all = lasting_names.clone();
    all.extend(doomed_names.iter().cloned());
    fill_store(&mut daemon, "ovn-default", all).await;
    let channel = daemon.channel().await;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    // About 100 writes a second, each durable: enough to move every page, and CPU left to list.
    let writer = churn(
        channel,
        lasting,
        doomed_names,
        Duration::from_millis(20),
        stop.clone(),
        progress.clone(),
    );
    common::wait_until_async("the writer to start", Duration::from_secs(30), || {
        progress.load(Ordering::Relaxed) >= 10
    })
    .await;

    // vipctl get vip: one table, page by page.
    let before = progress.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_vipctl"))
            .args(["--server", &daemon.endpoint, "get", "vip"])
            .output()
            .expect("run vipctl")
    });
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    let vipctl_writes = progress.load(Ordering::Relaxed) - before;
    eprintln!(
        "vipctl get vip: {} rows in {:.1} s, {vipctl_writes} writes meanwhile",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    assert_exactly_once(&rows, &lasting_names, "vipctl get vip");
    assert!(vipctl_writes > 0, "no write during the vipctl listing");

    // grpcurl, following nextPageToken at the maximum page size.
    let before = progress.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let body = serde_json::json!({ "page_size": 1000, "page_token": page_token }).to_string();
        let (ok, output) = tokio::task::block_in_place(|| {
            grpcurl(
                &daemon,
                &["-max-msg-sz", "16777216", "-d", &body],
                &["ovnvip.v1.VipService/ListVips"],
            )
        });
        assert!(ok, "{output}");
        let page: serde_json::Value = serde_json::from_str(&output).unwrap_or_else(|error| panic!("{error}: {output}"));
        pages += 1;
        for vip in page["vips"].as_array().into_iter().flatten() {
            listed.push(vip["name"].as_str().unwrap_or_default().to_string());
        }
        match page["nextPageToken"].as_str() {
            Some(token) if !token.is_empty() => page_token = token.to_string(),
            _ => break,
        }
    }
    let grpcurl_writes = progress.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    eprintln!(
        "grpcurl: {} VIPs in {pages} pages in {:.1} s, {grpcurl_writes} writes meanwhile; whole test {:.1} s",
        listed.len(),
        started.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
    assert_exactly_once(&listed, &lasting_names, "grpcurl");
    assert!(pages > 100, "{pages} pages");
    assert!(grpcurl_writes > 0, "no write during the grpcurl listing");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sizes_default_cap_and_tokens_bind_to_their_listing() {
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    let mut subnets = SubnetServiceClient::new(channel.clone());
    let mut vips = VipServiceClient::new(channel.clone());
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .expect("subnet");
    subnets
        .create_subnet(common::subnet_request("other", "10.17.0.0/16", ""))
        .await
        .expect("subnet");
    let names: Vec<String> = (0..1200).map(|index| format!("vip-{index:04}")).collect();
    create_vips(&channel, "ovn-default", names.clone()).await;

    // Default 500, maximum 1,000.
    let first = vips
        .list_vips(pb::ListVipsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.vips.len(), 500);
    assert!(!first.next_page_token.is_empty());
    let capped = vips
        .list_vips(pb::ListVipsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(capped.vips.len(), 1000);
    let (listed, pages) = list_all(&mut vips, 0).await;
    assert_eq!((listed, pages), (names.clone(), 3));

    // Bad sizes and tokens: INVALID_ARGUMENT naming the field.
    let negative = vips
        .list_vips(pb::ListVipsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&negative, "page_size");
    for (label, request) in [
        (
            "garbage",
            pb::ListVipsRequest {
                page_token: "not a token!".into(),
                ..Default::default()
            },
        ),
        (
            "another filter",
            pb::ListVipsRequest {
                subnet: "other".into(),
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ),
        (
            "well-formed base64 of something else",
            pb::ListVipsRequest {
                page_token: "dmlwLTAwMDE".into(),
                ..Default::default()
            },
        ),
    ] {
        let error = vips.list_vips(request).await.unwrap_err();
        assert_invalid(&error, "page_token");
        eprintln!("{label}: {}", error.message());
    }
    // A VIP token is no subnet token.
    let error = subnets
        .list_subnets(pb::ListSubnetsRequest {
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "page_token");

    // Subnets, rules and pods page too.
    let mut subnet_names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = subnets
            .list_subnets(pb::ListSubnetsRequest {
                page_size: 1,
                page_token,
            })
            .await
            .expect("subnet page")
            .into_inner();
        subnet_names.extend(page.subnets.into_iter().map(|subnet| subnet.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(subnet_names, ["other", "ovn-default"]);

    let mut rules = SwitchLbRuleServiceClient::new(channel.clone());
    for (name, port) in [("rule-a", 80), ("rule-b", 81), ("rule-c", 82)] {
        rules
            .create_switch_lb_rule(pb::CreateSwitchLbRuleRequest {
                rule: Some(pb::SwitchLbRule {
                    name: name.into(),
                    vip: "vip-0001".into(),
                    endpoints: vec!["10.16.9.9".into()],
                    ports: vec![pb::LbPort {
                        name: "http".into(),
                        port,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|error| panic!("rule {name}: {error}"));
    }
    let page = rules
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("rules")
        .into_inner();
    assert_eq!(
        page.rules.iter().map(|rule| rule.name.as_str()).collect::<Vec<_>>(),
        ["rule-a", "rule-b"]
    );
    let page = rules
        .list_switch_lb_rules(pb::ListSwitchLbRulesRequest {
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .expect("rules")
        .into_inner();
    assert_eq!(
        page.rules.iter().map(|rule| rule.name.as_str()).collect::<Vec<_>>(),
        ["rule-c"]
    );
    assert!(page.next_page_token.is_empty());

    let mut pods = PodServiceClient::new(channel.clone());
    for (namespace, name) in [("a", "web-1"), ("b", "web-0"), ("a", "web-0")] {
        pods.bind_pod(pb::BindPodRequest {
            namespace: namespace.into(),
            name: name.into(),
            nics: vec![pb::NicRequest {
                subnet: "other".into(),
                interface: "eth0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|error| panic!("bind {namespace}/{name}: {error}"));
    }
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = pods
            .list_pods(pb::ListPodsRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .expect("pod page")
            .into_inner();
        listed.extend(
            page.pods
                .into_iter()
                .map(|pod| format!("{}/{}", pod.namespace, pod.name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, ["a/web-0", "a/web-1", "b/web-0"]);
    daemon.stop().await;
}

/// Runs `grpcurl -plaintext FLAGS ADDRESS REST` (GRPCURL names the binary; scripts/test sets it).
fn grpcurl(daemon: &TestDaemon, flags: &[&str], rest: &[&str]) -> (bool, String) {
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
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipctl_and_grpcurl_page_through_every_vip() {
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    SubnetServiceClient::new(channel.clone())
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .expect("subnet");
    let names: Vec<String> = (0..1234).map(|index| format!("vip-{index:04}")).collect();
    create_vips(&channel, "ovn-default", names.clone()).await;

    // vipctl: three pages of the default 500, one table, every VIP once.
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_vipctl"))
            .args(["--server", &daemon.endpoint, "get", "vip"])
            .output()
            .expect("run vipctl")
    });
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = text.lines();
    assert!(lines.next().unwrap_or_default().starts_with("NAME"), "{text}");
    let rows: Vec<&str> = lines
        .map(|line| line.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(rows, names, "vipctl get vip lists every VIP once, in name order");
    assert_eq!(
        text.lines().filter(|line| line.starts_with("NAME")).count(),
        1,
        "one header"
    );
    // -o json gathers the pages into one List.
    let output = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_vipctl"))
            .args(["--server", &daemon.endpoint, "get", "vip", "-o", "json"])
            .output()
            .expect("run vipctl")
    });
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1234));

    // grpcurl: follow nextPageToken by hand.
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let body = serde_json::json!({ "page_size": 400, "page_token": page_token }).to_string();
        let (ok, output) =
            tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", &body], &["ovnvip.v1.VipService/ListVips"]));
        assert!(ok, "{output}");
        let page: serde_json::Value = serde_json::from_str(&output).unwrap_or_else(|error| panic!("{error}: {output}"));
        pages += 1;
        for vip in page["vips"].as_array().into_iter().flatten() {
            listed.push(vip["name"].as_str().unwrap_or_default().to_string());
        }
        match page["nextPageToken"].as_str() {
            Some(token) if !token.is_empty() => page_token = token.to_string(),
            _ => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(listed, names);
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len());
    // UpdateVip through grpcurl (1.8.6 reads a FieldMask as {"paths": [...]}).
    let update = r#"{"vip": {"name": "vip-0000", "namespace": "default", "selector": ["app: x"]}, "update_mask": {"paths": ["namespace", "selector"]}}"#;
    let (ok, output) =
        tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", update], &["ovnvip.v1.VipService/UpdateVip"]));
    assert!(
        ok && output.contains("app: x") && output.contains("\"default\""),
        "{output}"
    );
    let update = r#"{"vip": {"name": "vip-0000", "v4ip": "10.16.9.9"}, "update_mask": {"paths": ["v4ip"]}}"#;
    let (ok, output) =
        tokio::task::block_in_place(|| grpcurl(&daemon, &["-d", update], &["ovnvip.v1.VipService/UpdateVip"]));
    assert!(
        !ok && output.contains("Code: InvalidArgument") && output.contains("v4ip"),
        "{output}"
    );
    // A bad token through grpcurl: InvalidArgument naming the field.
    let (ok, output) = tokio::task::block_in_place(|| {
        grpcurl(
            &daemon,
            &["-d", r#"{"page_token": "bogus"}"#],
            &["ovnvip.v1.VipService/ListVips"],
        )
    });
    assert!(
        !ok && output.contains("Code: InvalidArgument") && output.contains("page_token"),
        "{output}"
    );
    daemon.stop().await;
}

/// BENCHMARKS.md's figures: `vipctl get vip` at 100,000 VIPs — seconds to the first row and to
/// the last, vipctl's peak RSS (GNU time), and this process's peak RSS (the daemon, its NB
/// client and the test's own client). `cargo test --release --test paging -- --ignored --nocapture vipctl_get_vip_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100,000 VIPs: run with --release --ignored --nocapture"]
async fn vipctl_get_vip_at_100k_vips() {
    use std::io::BufRead as _;
    let count = 100_000;
    let daemon = TestDaemon::start_with(true).await;
    let channel = daemon.channel().await;
    SubnetServiceClient::new(channel.clone())
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/14", ""))
        .await
        .expect("subnet");
    let started = std::time::Instant::now();
    create_vips(
        &channel,
        "ovn-default",
        (0..count).map(|index| format!("vip-{index:06}")).collect(),
    )
    .await;
    eprintln!("created {count} VIPs in {:.1} s", started.elapsed().as_secs_f64());
    let (first, last, rows, time) = tokio::task::block_in_place(|| {
        let started = std::time::Instant::now();
        let mut child = Command::new("/usr/bin/time")
            .args(["-f", "%e s, %M KiB"])
            .arg(env!("CARGO_BIN_EXE_vipctl"))
            .args(["--server", &daemon.endpoint, "get", "vip"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run vipctl under /usr/bin/time");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _header = lines.next();
        let _first_row = lines.next();
        let first = started.elapsed();
        let rows = 1 + lines.map_while(Result::ok).count();
        let output = child.wait_with_output().expect("vipctl");
        let last = started.elapsed();
        (
            first,
            last,
            rows,
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        )
    });
    assert_eq!(rows, count);
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "vipctl get vip, {count} VIPs: first row after {:.2} s, last after {:.2} s; vipctl (GNU time): {time}; test process (daemon + clients) {peak}",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    daemon.stop().await;
}
