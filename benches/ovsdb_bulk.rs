//! Inserting 10,000 `type=virtual` Logical_Switch_Ports into one switch: through our OVSDB
//! client (`Client::transact`, as the daemon does) in one transaction and in 100 transactions of
//! 100, beside a minimal raw JSON-RPC writer on the unix socket (the floor) and `ovn-nbctl` one
//! call per port (what a user would script).
//!
//! `cargo bench --bench ovsdb_bulk`. `OVSDB_BENCH_ROWS` (10000) and `OVSDB_BENCH_NBCTL_ROWS`
//! (1000) change the sizes; `OVSDB_BENCH_REPEATS` (3) the runs per scenario; `OVSDB_BENCH_ONLY`
//! (e.g. `a,c`) picks scenarios, for profiling.
//!
//! Every run gets a fresh NB `ovsdb-server` in a temporary directory, started with only the
//! options the OVN notes give (no debug logging, which would add the cost of logging every
//! message to every scenario and so hide differences between them).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovn_vipd::nb;
use ovn_vipd::ovsdb::{Atom, Client, Condition, Connection, ConnectionOptions, Mutation, Operation, Remote, Value};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn run(command: &str, args: &[&str]) -> String {
    let output = Command::new(command)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    assert!(
        output.status.success(),
        "{command} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn shell(script: &str) -> String {
    run("sh", &["-c", script]).trim().to_string()
}

/// CPU seconds (user + system) of a process, from /proc: attributes a scenario's time to the
/// server or to this process.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / ticks_per_second
}

/// One NB ovsdb-server (OVN-NOTES "A throwaway NB database"), killed when dropped.
struct NbServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    child: Child,
}

impl NbServer {
    fn start() -> NbServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_str().expect("utf-8 path").to_string();
        run("ovsdb-tool", &["create", &path("nb.db"), NB_SCHEMA]);
        let child = Command::new("ovsdb-server")
            .arg("--no-chdir")
            .arg(format!("--unixctl={}", path("nb.ctl")))
            .arg(format!("--log-file={}", path("nb.log")))
            .arg(format!("--remote=punix:{}", path("nb.sock")))
            .arg(path("nb.db"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ovsdb-server (is openvswitch-common installed?)");
        let socket = dir.path().join("nb.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "ovsdb-server never listened on {socket:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let server = NbServer {
            _dir: dir,
            socket,
            child,
        };
        server.nbctl(&["ls-add", "sw0"]);
        server
    }

    fn remote(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.remote());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    /// Asserts that exactly `rows` ports `vip-0..` exist, all `type=virtual` with their options
    /// and external_ids, and all in sw0: a failed write must never be reported as a figure.
    fn verify(&self, label: &str, rows: usize) {
        // The issue's check: `... --bare --columns=name list logical_switch_port | grep -c vip-`.
        let names = self.nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"]);
        let listed = names.lines().filter(|line| line.contains("vip-")).count();
        assert_eq!(listed, rows, "{label}: {listed} vip- ports in NB, expected {rows}");
        let complete = self.nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "logical_switch_port",
            "type=virtual",
            "external_ids:vendor=ovn-vipd",
            "options:virtual-parents=\"a.default,b.default\"",
        ]);
        let complete = complete.lines().filter(|line| line.starts_with("vip-")).count();
        assert_eq!(complete, rows, "{label}: only {complete} ports have every column");
        let ports = self.nbctl(&["--bare", "--columns=ports", "find", "logical_switch", "name=sw0"]);
        let in_switch = ports.split_whitespace().count();
        assert_eq!(in_switch, rows, "{label}: sw0 has {in_switch} ports, expected {rows}");
        let last = format!("vip-{}", rows - 1);
        let ip = self.nbctl(&["get", "logical_switch_port", &last, "options:virtual-ip"]);
        assert_eq!(
            ip.trim().trim_matches('"'),
            virtual_ip(rows - 1),
            "{label}: virtual-ip of {last}"
        );
    }
}

impl Drop for NbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A distinct 10.16.x.y for each index (x.1 to x.250, up to 65,536 × 250 rows).
fn virtual_ip(index: usize) -> String {
    format!("10.16.{}.{}", index / 250, index % 250 + 1)
}

const VIRTUAL_PARENTS: &str = "a.default,b.default";

/// `count` port inserts from `start`, then the mutate that puts them into sw0.
fn client_operations(start: usize, count: usize) -> Vec<Operation> {
    let mut operations = Vec::with_capacity(count + 1);
    let mut names = Vec::with_capacity(count);
    for index in start..start + count {
        let uuid_name = format!("vip{index}");
        let row = [
            ("name".to_string(), Value::string(format!("vip-{index}"))),
            ("type".to_string(), Value::string("virtual")),
            (
                "options".to_string(),
                Value::map([
                    ("virtual-ip", virtual_ip(index)),
                    ("virtual-parents", VIRTUAL_PARENTS.to_string()),
                ]),
            ),
            ("external_ids".to_string(), Value::map([("vendor", "ovn-vipd")])),
        ];
        operations.push(Operation::Insert {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            row: row.into_iter().collect(),
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

fn check_results(results: &[ovn_vipd::ovsdb::OperationResult], count: usize) {
    assert_eq!(results.len(), count + 1, "one result per operation");
    assert!(
        results[..count].iter().all(|result| result.uuid.is_some()),
        "an insert has no uuid"
    );
    assert_eq!(results[count].count, Some(1), "the mutate touched no switch");
}

/// (a) and (b): `Client::transact` with the daemon's NB configuration (it monitors the NB tables
/// it uses, Logical_Switch_Port and Logical_Switch among them, as the daemon does).
async fn through_client(server: &NbServer, rows: usize, batch: usize) -> Duration {
    let client = Client::start(nb::client_config(Remote::parse_list(&server.remote()).expect("remote")));
    client.wait_connected(Duration::from_secs(10)).await.expect("connect");
    let started = Instant::now();
    let mut start = 0;
    while start < rows {
        let count = batch.min(rows - start);
        let results = client
            .transact(&client_operations(start, count))
            .await
            .expect("transact");
        check_results(&results, count);
        start += count;
    }
    let elapsed = started.elapsed();
    client.shutdown().await;
    elapsed
}

/// Diagnostic: the same single transaction on a bare `Connection` (no monitor, no cache).
async fn through_connection(server: &NbServer, rows: usize) -> Duration {
    let remote = Remote::parse_list(&server.remote()).expect("remote").remove(0);
    let (connection, _notifications) = Connection::open(&remote, None, &ConnectionOptions::default())
        .await
        .expect("connect");
    let started = Instant::now();
    let results = connection
        .transact(nb::DATABASE, &client_operations(0, rows), None)
        .await
        .expect("transact");
    check_results(&results, rows);
    started.elapsed()
}

/// The end of the first complete JSON value in `buffer`, counting brackets outside strings.
struct JsonEnd {
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonEnd {
    fn find(&mut self, buffer: &[u8]) -> Option<usize> {
        while self.scanned < buffer.len() {
            let byte = buffer[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.scanned);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// (c) The floor: the request built with string formatting, written with std `UnixStream`, and
/// the reply read in 64 KiB reads until its closing bracket. The clock stops when the reply is
/// complete; checking it comes after.
fn raw_writer(server: &NbServer, rows: usize) -> Duration {
    let mut stream = UnixStream::connect(&server.socket).expect("connect");
    let started = Instant::now();
    let mut text = String::with_capacity(rows * 300 + 256);
    text.push_str(r#"{"id":1,"method":"transact","params":["OVN_Northbound""#);
    for index in 0..rows {
        text.push_str(&format!(
            r#",{{"op":"insert","table":"Logical_Switch_Port","uuid-name":"vip{index}","row":{{"name":"vip-{index}","type":"virtual","options":["map",[["virtual-ip","{}"],["virtual-parents","{VIRTUAL_PARENTS}"]]],"external_ids":["map",[["vendor","ovn-vipd"]]]}}}}"#,
            virtual_ip(index)
        ));
    }
    text.push_str(r#",{"op":"mutate","table":"Logical_Switch","where":[["name","==","sw0"]],"mutations":[["ports","insert",["set",["#);
    for index in 0..rows {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&format!(r#"["named-uuid","vip{index}"]"#));
    }
    text.push_str("]]]]}]}");
    stream.write_all(text.as_bytes()).expect("write");
    let mut reply = Vec::with_capacity(rows * 64 + 4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut end = JsonEnd {
        scanned: 0,
        depth: 0,
        in_string: false,
        escaped: false,
    };
    let length = loop {
        let read = stream.read(&mut chunk).expect("read");
        assert!(read > 0, "the server closed the connection");
        reply.extend_from_slice(&chunk[..read]);
        if let Some(length) = end.find(&reply) {
            break length;
        }
    };
    let elapsed = started.elapsed();
    let reply: serde_json::Value = serde_json::from_slice(&reply[..length]).expect("a JSON reply");
    assert_eq!(reply["id"], 1, "not the transact reply: {reply}");
    assert!(reply["error"].is_null(), "{reply}");
    let results = reply["result"].as_array().expect("a result array");
    assert_eq!(results.len(), rows + 1, "one result per operation");
    assert!(
        results.iter().all(|result| result.get("error").is_none()),
        "an operation failed"
    );
    elapsed
}

/// (d) `ovn-nbctl`, one call per port.
fn nbctl_per_port(server: &NbServer, rows: usize) -> Duration {
    let db = format!("--db={}", server.remote());
    let started = Instant::now();
    for index in 0..rows {
        let name = format!("vip-{index}");
        let options = format!("virtual-ip={}", virtual_ip(index));
        let parents = format!("virtual-parents={VIRTUAL_PARENTS}");
        run(
            "ovn-nbctl",
            &[
                &db,
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
                &parents,
                "--",
                "set",
                "logical_switch_port",
                &name,
                "external_ids:vendor=ovn-vipd",
            ],
        );
    }
    started.elapsed()
}

struct Sample {
    seconds: f64,
    server_cpu: f64,
    bench_cpu: f64,
}

struct Scenario {
    key: &'static str,
    label: &'static str,
    rows: usize,
    repeats: usize,
    samples: Vec<Sample>,
}

impl Scenario {
    /// The sample with the median time.
    fn median(&self) -> &Sample {
        let mut order: Vec<&Sample> = self.samples.iter().collect();
        order.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        order[order.len() / 2]
    }
}

fn main() {
    let rows = env_number("OVSDB_BENCH_ROWS", 10_000);
    let nbctl_rows = env_number("OVSDB_BENCH_NBCTL_ROWS", 1_000).min(rows);
    let repeats = env_number("OVSDB_BENCH_REPEATS", 3).max(1);
    let only = std::env::var("OVSDB_BENCH_ONLY").unwrap_or_default();
    assert!(rows > 0, "OVSDB_BENCH_ROWS must be positive");
    let selected = |key: &str| only.is_empty() || only.split(',').any(|k| k.trim() == key);

    let memory_kib: f64 = shell("awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap_or(0.0);
    println!(
        "machine: nproc {}, {}, {:.1} GiB memory; load average {}",
        shell("nproc"),
        shell("grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-"),
        memory_kib / 1024.0 / 1024.0,
        shell("cut -d' ' -f1-3 /proc/loadavg")
    );
    println!("{}", shell("ovsdb-server --version | head -1"));
    println!("{}", shell("ovn-nbctl --version | head -1"));
    println!(
        "command: cargo bench --bench ovsdb_bulk  (OVSDB_BENCH_ROWS={rows} OVSDB_BENCH_NBCTL_ROWS={nbctl_rows} OVSDB_BENCH_REPEATS={repeats}{})",
        if only.is_empty() { String::new() } else { format!(" OVSDB_BENCH_ONLY={only}") }
    );
    let ticks_per_second: f64 = shell("getconf CLK_TCK").parse().unwrap_or(100.0);

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let batches = rows.div_ceil(100);
    let mut scenarios = [
        Scenario {
            key: "a",
            label: "(a) ovn-vipd Client::transact, 1 transaction",
            rows,
            repeats,
            samples: Vec::new(),
        },
        Scenario {
            key: "b",
            label: "(b) ovn-vipd Client::transact, transactions of 100",
            rows,
            repeats,
            samples: Vec::new(),
        },
        Scenario {
            key: "c",
            label: "(c) raw JSON-RPC writer, 1 transaction (floor)",
            rows,
            repeats,
            samples: Vec::new(),
        },
        Scenario {
            key: "d",
            label: "(d) ovn-nbctl, one call per port",
            rows: nbctl_rows,
            repeats: 1,
            samples: Vec::new(),
        },
        Scenario {
            key: "e",
            label: "(e) diagnostic: bare Connection::transact (no monitor), 1 transaction",
            rows,
            repeats,
            samples: Vec::new(),
        },
    ];
    // Rounds interleave the scenarios, so a change in the machine's load hits them alike.
    for round in 0..repeats {
        for scenario in scenarios.iter_mut() {
            if round >= scenario.repeats || !selected(scenario.key) {
                continue;
            }
            let server = NbServer::start();
            let server_cpu = cpu_seconds(&server.pid(), ticks_per_second);
            let bench_cpu = cpu_seconds("self", ticks_per_second);
            let elapsed = match scenario.key {
                "a" => runtime.block_on(through_client(&server, rows, rows)),
                "b" => runtime.block_on(through_client(&server, rows, 100)),
                "c" => raw_writer(&server, rows),
                "d" => nbctl_per_port(&server, nbctl_rows),
                "e" => runtime.block_on(through_connection(&server, rows)),
                other => unreachable!("scenario {other}"),
            };
            let sample = Sample {
                seconds: elapsed.as_secs_f64(),
                server_cpu: cpu_seconds(&server.pid(), ticks_per_second) - server_cpu,
                bench_cpu: cpu_seconds("self", ticks_per_second) - bench_cpu,
            };
            server.verify(scenario.label, scenario.rows);
            eprintln!("  {} run {}: {:.3} s", scenario.label, round + 1, sample.seconds);
            scenario.samples.push(sample);
        }
    }

    let floor = scenarios
        .iter()
        .find(|scenario| scenario.key == "c" && !scenario.samples.is_empty())
        .map(|floor| floor.median().seconds / floor.rows as f64);
    println!();
    println!("| scenario | rows | seconds | rows/s | vs floor | runs (s) | server CPU s | bench CPU s |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    for scenario in scenarios.iter().filter(|scenario| !scenario.samples.is_empty()) {
        let median = scenario.median();
        let ratio = floor
            .map(|floor| format!("{:.2}x", median.seconds / scenario.rows as f64 / floor))
            .unwrap_or_else(|| "-".into());
        let runs: Vec<String> = scenario
            .samples
            .iter()
            .map(|sample| format!("{:.3}", sample.seconds))
            .collect();
        let label = if scenario.key == "b" {
            format!("{} ({batches} transactions)", scenario.label)
        } else {
            scenario.label.to_string()
        };
        println!(
            "| {label} | {} | {:.3} | {:.0} | {ratio} | {} | {:.2} | {:.2} |",
            scenario.rows,
            median.seconds,
            scenario.rows as f64 / median.seconds,
            runs.join(", "),
            median.server_cpu,
            median.bench_cpu,
        );
    }
    println!();
    println!(
        "median of {repeats} runs (fresh database each), ovn-nbctl once; \"vs floor\" compares time per row (ovn-nbctl writes fewer rows);"
    );
    println!("CPU columns: ovsdb-server and this benchmark process (client, or the raw writer) during the median run.");
    let client = scenarios
        .iter()
        .find(|scenario| scenario.key == "a" && !scenario.samples.is_empty());
    if let (Some(client), Some(floor)) = (client, floor) {
        let ratio = client.median().seconds / client.rows as f64 / floor;
        println!(
            "goal: (a) within 1.3x of the floor: {} ({ratio:.2}x)",
            if ratio <= 1.3 { "met" } else { "MISSED" }
        );
    }
}
