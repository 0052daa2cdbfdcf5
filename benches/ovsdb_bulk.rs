//! Inserting 10,000 `type=virtual` Logical_Switch_Ports into one switch: through our OVSDB
//! client in one transaction and in 100 transactions of 100, beside a minimal raw JSON-RPC
//! writer (the floor) and `ovn-nbctl` one call per port (what a user would script).
//!
//! `cargo bench --bench ovsdb_bulk` (OVSDB_BENCH_ROWS, OVSDB_BENCH_NBCTL_ROWS to change sizes).

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::OvsdbServer;
use ovn_vipd::nb;
use ovn_vipd::ovsdb::{Atom, Client, Condition, Mutation, Operation, Value};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn virtual_ip(index: usize) -> String {
    format!("10.16.{}.{}", index / 250, index % 250 + 2)
}

fn fresh_server(dir: &std::path::Path) -> OvsdbServer {
    let server = OvsdbServer::nb(dir);
    server.nbctl(&["ls-add", "sw0"]);
    server
}

fn count_ports(server: &OvsdbServer) -> usize {
    server
        .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"])
        .lines()
        .filter(|line| line.starts_with("vip-"))
        .count()
}

fn client_operations(start: usize, count: usize) -> Vec<Operation> {
    let mut operations = Vec::with_capacity(count + 1);
    let mut names = Vec::with_capacity(count);
    for index in start..start + count {
        let uuid_name = format!("port{index}");
        operations.push(Operation::Insert {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            row: [
                ("name".to_string(), Value::string(format!("vip-{index}"))),
                ("type".to_string(), Value::string("virtual")),
                (
                    "options".to_string(),
                    Value::map([
                        ("virtual-ip", virtual_ip(index)),
                        ("virtual-parents", "a.default,b.default".to_string()),
                    ]),
                ),
                ("external_ids".to_string(), Value::map([("vendor", "ovn-vipd")])),
            ]
            .into_iter()
            .collect(),
            uuid_name: Some(uuid_name.clone()),
        });
        names.push(Atom::named_uuid(uuid_name));
    }
    operations.push(Operation::Mutate {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::equal("name", Value::string("sw0"))],
        mutations: vec![Mutation::insert("ports", Value::Set(names.into_iter().collect()))],
    });
    operations
}

async fn through_client(server: &OvsdbServer, rows: usize, batch: usize) -> Duration {
    let client = Client::start(nb::client_config(
        ovn_vipd::ovsdb::Remote::parse_list(&server.unix_remote()).unwrap(),
    ));
    client.wait_connected(Duration::from_secs(10)).await.expect("connect");
    let started = Instant::now();
    let mut start = 0;
    while start < rows {
        let count = batch.min(rows - start);
        client
            .transact(&client_operations(start, count))
            .await
            .expect("transact");
        start += count;
    }
    let elapsed = started.elapsed();
    client.shutdown().await;
    elapsed
}

/// The floor: the JSON text built with string formatting, one write, one reply read.
fn raw_writer(server: &OvsdbServer, rows: usize) -> Duration {
    let started = Instant::now();
    let mut text = String::with_capacity(rows * 300);
    text.push_str(r#"{"id":1,"method":"transact","params":["OVN_Northbound""#);
    for index in 0..rows {
        text.push_str(&format!(
            r#",{{"op":"insert","table":"Logical_Switch_Port","uuid-name":"p{index}","row":{{"name":"vip-{index}","type":"virtual","options":["map",[["virtual-ip","{}"],["virtual-parents","a.default,b.default"]]],"external_ids":["map",[["vendor","ovn-vipd"]]]}}}}"#,
            virtual_ip(index)
        ));
    }
    text.push_str(r#",{"op":"mutate","table":"Logical_Switch","where":[["name","==","sw0"]],"mutations":[["ports","insert",["set",["#);
    for index in 0..rows {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&format!(r#"["named-uuid","p{index}"]"#));
    }
    text.push_str("]]]]}]}");
    let mut stream = UnixStream::connect(&server.socket).expect("connect");
    stream.write_all(text.as_bytes()).expect("write");
    let reply: serde_json::Value = serde_json::Deserializer::from_reader(&stream)
        .into_iter()
        .next()
        .expect("a reply")
        .expect("valid JSON");
    let elapsed = started.elapsed();
    assert!(reply["error"].is_null(), "{reply}");
    let results = reply["result"].as_array().expect("a result array");
    assert!(
        results.iter().all(|result| result.get("error").is_none()),
        "a row failed: {reply}"
    );
    elapsed
}

fn nbctl_per_port(server: &OvsdbServer, rows: usize) -> Duration {
    let started = Instant::now();
    for index in 0..rows {
        let name = format!("vip-{index}");
        let options = format!("virtual-ip={}", virtual_ip(index));
        server.nbctl(&[
            "lsp-add",
            "sw0",
            &name,
            "--",
            "lsp-set-type",
            &name,
            "virtual",
            "--",
            "lsp-set-options",
            &name,
            &options,
            "virtual-parents=a.default,b.default",
            "--",
            "set",
            "logical_switch_port",
            &name,
            "external_ids:vendor=ovn-vipd",
        ]);
    }
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let rows = env_number("OVSDB_BENCH_ROWS", 10_000);
    let nbctl_rows = env_number("OVSDB_BENCH_NBCTL_ROWS", 1_000);
    machine::describe("cargo bench --bench ovsdb_bulk");
    println!(
        "{}",
        common::run("ovsdb-server", &["--version"]).lines().next().unwrap_or("")
    );
    println!(
        "{}",
        common::run("ovn-nbctl", &["--version"]).lines().next().unwrap_or("")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(String, usize, Duration)> = Vec::new();

    let mut measure = |label: &str, count: usize, run: &mut dyn FnMut(&OvsdbServer) -> Duration, repeats: usize| {
        let mut samples = Vec::new();
        for _ in 0..repeats {
            let dir = tempfile::tempdir().unwrap();
            let server = fresh_server(dir.path());
            let elapsed = run(&server);
            assert_eq!(count_ports(&server), count, "{label}: rows missing in NB");
            samples.push(elapsed);
        }
        results.push((label.to_string(), count, median(samples)));
    };
    measure(
        "raw JSON-RPC writer, 1 transaction (floor)",
        rows,
        &mut |server| raw_writer(server, rows),
        3,
    );
    measure(
        "ovn-vipd client, 1 transaction",
        rows,
        &mut |server| runtime.block_on(through_client(server, rows, rows)),
        3,
    );
    measure(
        "ovn-vipd client, transactions of 100",
        rows,
        &mut |server| runtime.block_on(through_client(server, rows, 100)),
        3,
    );
    measure(
        "ovn-nbctl, one call per port",
        nbctl_rows,
        &mut |server| nbctl_per_port(server, nbctl_rows),
        1,
    );

    let floor_per_row = results[0].2.as_secs_f64() / results[0].1 as f64;
    println!();
    println!("| scenario | rows | seconds | rows/s | time per row vs floor |");
    println!("|---|---:|---:|---:|---:|");
    for (label, count, elapsed) in &results {
        let per_row = elapsed.as_secs_f64() / *count as f64;
        println!(
            "| {label} | {count} | {:.3} | {:.0} | {:.2}x |",
            elapsed.as_secs_f64(),
            *count as f64 / elapsed.as_secs_f64(),
            per_row / floor_per_row
        );
    }
    println!(
        "\n(median of 3 fresh databases each, ovn-nbctl once; goal: the 1-transaction client within 1.3x of the floor)"
    );
}
