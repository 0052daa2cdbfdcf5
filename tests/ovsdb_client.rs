//! The OVSDB client against real `ovsdb-server` processes with the real OVN NB schema.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_until_async, NbCluster, OvsdbServer, TlsPaths};
use ovn_vipd::nb::{self, LogicalSwitch, LogicalSwitchPort, NbRow};
use ovn_vipd::ovsdb::{
    Atom, Client, ClientConfig, ClientEvent, Condition, Connection, ConnectionOptions, Function, Mutation, Mutator,
    Notification, Operation, OvsdbError, Remote, Row, TlsFiles, Value, WaitUntil,
};
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

fn fast_config(remotes: &str) -> ClientConfig {
    common::init_tracing();
    let mut config = nb::client_config(Remote::parse_list(remotes).unwrap());
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(20);
    config
}

async fn raw_connection(remote: &str) -> (Connection, ovn_vipd::ovsdb::Notifications) {
    Connection::open(&Remote::parse(remote).unwrap(), None, &ConnectionOptions::default())
        .await
        .expect("connect")
}

fn row(entries: &[(&str, Value)]) -> Row {
    entries
        .iter()
        .map(|(column, value)| (column.to_string(), value.clone()))
        .collect()
}

/// Every row of every monitored table as the server has it (the monitored columns), read through
/// a fresh connection.
async fn server_snapshot(remote: &str) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    let (connection, _) = raw_connection(remote).await;
    let schema = connection.get_schema(nb::DATABASE).await.unwrap();
    let mut snapshot = BTreeMap::new();
    for (table, columns) in nb::REQUIRED_COLUMNS {
        let select = Operation::Select {
            table: table.to_string(),
            conditions: vec![],
            columns: Some(
                std::iter::once("_uuid")
                    .chain(columns.iter().copied())
                    .map(String::from)
                    .collect(),
            ),
        };
        let results = connection
            .transact(nb::DATABASE, &[select], Some(&schema))
            .await
            .unwrap();
        let mut rows = BTreeMap::new();
        for mut row in results[0].rows.clone().unwrap() {
            let uuid = row
                .remove("_uuid")
                .and_then(|value| value.as_atom().and_then(Atom::as_uuid))
                .unwrap();
            row.remove("_version");
            rows.insert(uuid, row);
        }
        snapshot.insert(table.to_string(), rows);
    }
    snapshot
}

fn cache_snapshot(client: &Client) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    let cache = client.cache();
    nb::REQUIRED_COLUMNS
        .iter()
        .map(|(table, _)| {
            (
                table.to_string(),
                cache.rows(table).map(|(uuid, row)| (*uuid, row.clone())).collect(),
            )
        })
        .collect()
}

async fn assert_cache_matches_server(client: &Client, remote: &str) {
    let expected = server_snapshot(remote).await;
    common::wait_until_async("the cache to equal the server", Duration::from_secs(10), || {
        cache_snapshot(client) == expected
    })
    .await;
    assert_eq!(cache_snapshot(client), expected, "cache differs from the server");
}

async fn next_event(
    events: &mut broadcast::Receiver<ClientEvent>,
    timeout: Duration,
    mut matches: impl FnMut(&ClientEvent) -> bool,
) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, events.recv()).await {
            Ok(Ok(event)) if matches(&event) => return event,
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => panic!("event stream: {error}"),
            Err(_) => panic!("no matching event within {timeout:?}"),
        }
    }
}

fn switch_with_port(switch: &str, port: &str) -> Vec<Operation> {
    vec![
        Operation::Insert {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            row: row(&[
                ("name", Value::string(port)),
                ("type", Value::string("virtual")),
                (
                    "options",
                    Value::map([
                        ("virtual-ip", "10.16.0.100"),
                        ("virtual-parents", "a.default,b.default"),
                    ]),
                ),
                ("external_ids", Value::map([("vendor", "ovn-vipd")])),
            ]),
            uuid_name: Some("new_port".into()),
        },
        Operation::Insert {
            table: nb::LOGICAL_SWITCH.into(),
            row: row(&[
                ("name", Value::string(switch)),
                ("ports", Value::set([Atom::named_uuid("new_port")])),
            ]),
            uuid_name: Some("new_switch".into()),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_round_trips_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let (connection, _) = raw_connection(&server.unix_remote()).await;
    let schema = connection.get_schema(nb::DATABASE).await.unwrap();
    let db = nb::DATABASE;

    // insert with uuid-name, referenced in the same transaction
    let results = connection
        .transact(db, &switch_with_port("sw0", "vip1"), Some(&schema))
        .await
        .unwrap();
    let port_uuid = results[0].uuid.unwrap();
    let switch_uuid = results[1].uuid.unwrap();
    assert!(server.nbctl(&["show"]).contains("port vip1"));
    assert_eq!(
        server.nbctl(&["get", "logical_switch_port", "vip1", "type"]).trim(),
        "virtual"
    );

    // select, typed by the schema: a one-element set comes back as a set
    let select = Operation::Select {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::equal("name", Value::string("sw0"))],
        columns: Some(vec!["name".into(), "ports".into()]),
    };
    let results = connection
        .transact(db, std::slice::from_ref(&select), Some(&schema))
        .await
        .unwrap();
    let rows = results[0].rows.as_ref().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ports"], Value::set([Atom::Uuid(port_uuid)]));

    // update
    let update = Operation::Update {
        table: nb::LOGICAL_SWITCH_PORT.into(),
        conditions: vec![Condition::uuid(port_uuid)],
        row: row(&[("addresses", Value::set(["00:00:00:00:00:01 10.16.0.5"]))]),
    };
    let results = connection.transact(db, &[update], Some(&schema)).await.unwrap();
    assert_eq!(results[0].count, Some(1));
    assert!(server
        .nbctl(&["get", "logical_switch_port", "vip1", "addresses"])
        .contains("10.16.0.5"));

    // mutate: map delete+insert in one mutate overwrites a key; set insert
    let mutate = Operation::Mutate {
        table: nb::LOGICAL_SWITCH_PORT.into(),
        conditions: vec![Condition::equal("name", Value::string("vip1"))],
        mutations: vec![
            Mutation::delete("options", Value::set(["virtual-ip"])),
            Mutation::insert("options", Value::map([("virtual-ip", "10.16.0.101")])),
            Mutation::new(
                "port_security",
                Mutator::Insert,
                Value::set(["00:00:00:00:00:01 10.16.0.5"]),
            ),
        ],
    };
    let results = connection.transact(db, &[mutate], Some(&schema)).await.unwrap();
    assert_eq!(results[0].count, Some(1));
    assert_eq!(
        server
            .nbctl(&["get", "logical_switch_port", "vip1", "options:virtual-ip"])
            .trim(),
        "\"10.16.0.101\""
    );

    // wait (satisfied), comment, and a wait that fails with timeout 0
    let wait_ok = Operation::Wait {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::uuid(switch_uuid)],
        columns: vec!["name".into()],
        until: WaitUntil::Equal,
        rows: vec![row(&[("name", Value::string("sw0"))])],
        timeout_ms: Some(0),
    };
    connection
        .transact(
            db,
            &[wait_ok, Operation::Comment("ovn-vipd test".into())],
            Some(&schema),
        )
        .await
        .unwrap();
    let wait_fails = Operation::Wait {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::new("name", Function::Equal, Value::string("sw0"))],
        columns: vec!["name".into()],
        until: WaitUntil::Equal,
        rows: vec![row(&[("name", Value::string("other"))])],
        timeout_ms: Some(0),
    };
    match connection.transact(db, &[wait_fails], Some(&schema)).await {
        Err(OvsdbError::Transaction(error)) => {
            assert_eq!((error.index, error.error.as_str()), (0, "timed out"))
        }
        other => panic!("wait should time out, got {other:?}"),
    }

    // assert without holding the lock
    match connection
        .transact(db, &[Operation::Assert { lock: "nobody".into() }], Some(&schema))
        .await
    {
        Err(OvsdbError::Transaction(error)) => assert_eq!(error.error, "not owner"),
        other => panic!("assert should fail, got {other:?}"),
    }

    // abort: the insert before it is rolled back, and the error is reported at its index
    let aborted = vec![
        Operation::Insert {
            table: nb::LOGICAL_SWITCH.into(),
            row: row(&[("name", Value::string("never"))]),
            uuid_name: None,
        },
        Operation::Abort,
    ];
    match connection.transact(db, &aborted, Some(&schema)).await {
        Err(OvsdbError::Transaction(error)) => {
            assert_eq!((error.index, error.error.as_str()), (1, "aborted"))
        }
        other => panic!("abort should fail, got {other:?}"),
    }
    assert!(!server.nbctl(&["ls-list"]).contains("never"));

    // a commit-time failure (a duplicate of the indexed LSP name) names OVSDB's error
    match connection
        .transact(db, &switch_with_port("sw1", "vip1"), Some(&schema))
        .await
    {
        Err(OvsdbError::Transaction(error)) => {
            assert_eq!(error.error, "constraint violation");
            assert_eq!(error.index, 2, "commit errors come after the last operation");
        }
        other => panic!("duplicate name should fail, got {other:?}"),
    }

    // delete: removing the port from the switch garbage-collects the non-root LSP
    let delete_ref = Operation::Mutate {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::uuid(switch_uuid)],
        mutations: vec![Mutation::delete("ports", Value::set([Atom::Uuid(port_uuid)]))],
    };
    let delete_switch = Operation::Delete {
        table: nb::LOGICAL_SWITCH.into(),
        conditions: vec![Condition::uuid(switch_uuid)],
    };
    let results = connection
        .transact(db, &[delete_ref, delete_switch], Some(&schema))
        .await
        .unwrap();
    assert_eq!(results[1].count, Some(1));
    assert_eq!(server.nbctl(&["show"]).trim(), "");
    assert_eq!(
        server.nbctl(&["--columns=name", "list", "logical_switch_port"]).trim(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dbs_get_schema_echo_monitor_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let (connection, mut notifications) = raw_connection(&server.tcp_remote()).await;
    let dbs = connection.list_dbs().await.unwrap();
    assert!(
        dbs.contains(&"OVN_Northbound".to_string()) && dbs.contains(&"_Server".to_string()),
        "{dbs:?}"
    );
    let schema = connection.get_schema(nb::DATABASE).await.unwrap();
    assert_eq!(schema.name, "OVN_Northbound");
    assert!(schema.tables.contains_key("Logical_Switch_Port"));
    assert_eq!(connection.echo(json!(["ping", 1])).await.unwrap(), json!(["ping", 1]));

    let initial = connection
        .monitor_cond(
            nb::DATABASE,
            json!("m1"),
            json!({"Logical_Switch": [{"columns": ["name"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(initial, json!({}));
    server.nbctl(&["ls-add", "sw-monitored"]);
    let notification = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
        .await
        .unwrap()
        .unwrap();
    match notification {
        Notification::Update2 { monitor_id, updates } => {
            assert_eq!(monitor_id, json!("m1"));
            assert!(updates.to_string().contains("sw-monitored"), "{updates}");
        }
        other => panic!("expected update2, got {other:?}"),
    }
    connection.monitor_cancel(json!("m1")).await.unwrap();
    server.nbctl(&["ls-add", "sw-after-cancel"]);
    let after = tokio::time::timeout(Duration::from_millis(500), notifications.recv()).await;
    assert!(after.is_err(), "no update after monitor_cancel, got {after:?}");

    // A standalone server keeps no history: monitor_cond_since answers found=false with everything.
    let (found, _txn, updates) = connection
        .monitor_cond_since(
            nb::DATABASE,
            json!("m2"),
            json!({"Logical_Switch": [{"columns": ["name"]}]}),
            "00000000-0000-0000-0000-000000000000",
        )
        .await
        .unwrap();
    assert!(!found);
    assert!(updates.to_string().contains("sw-after-cancel"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_steal_and_unlock_notify_the_other_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let (first, mut first_notes) = raw_connection(&server.unix_remote()).await;
    let (second, mut second_notes) = raw_connection(&server.unix_remote()).await;
    assert!(first.lock("ovn_vipd").await.unwrap());
    assert!(
        !second.lock("ovn_vipd").await.unwrap(),
        "the lock is held by the first session"
    );
    first.unlock("ovn_vipd").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), second_notes.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Notification::Locked(lock) => assert_eq!(lock, "ovn_vipd"),
        other => panic!("expected locked, got {other:?}"),
    }
    assert!(first.steal("ovn_vipd").await.unwrap());
    match tokio::time::timeout(Duration::from_secs(5), second_notes.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Notification::Stolen(lock) => assert_eq!(lock, "ovn_vipd"),
        other => panic!("expected stolen, got {other:?}"),
    }
    // The holder can now assert the lock in a transaction.
    first
        .transact(
            nb::DATABASE,
            &[Operation::Assert {
                lock: "ovn_vipd".into(),
            }],
            None,
        )
        .await
        .unwrap();
    assert!(first_notes.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_changes_made_by_ovn_nbctl() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let (client, mut events) = Client::start_subscribed(fast_config(&server.unix_remote()));
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;

    server.nbctl(&[
        "ls-add",
        "sw0",
        "--",
        "lsp-add",
        "sw0",
        "p1",
        "--",
        "lsp-set-addresses",
        "p1",
        "00:00:00:00:00:01 10.0.0.1",
    ]);
    wait_until_async("p1 in the cache", Duration::from_secs(5), || {
        LogicalSwitchPort::all(&client.cache())
            .iter()
            .any(|port| port.name == "p1")
    })
    .await;
    let switches = LogicalSwitch::all(&client.cache());
    assert_eq!(switches.len(), 1);
    assert_eq!(switches[0].ports.len(), 1);

    server.nbctl(&["lsp-set-port-security", "p1", "00:00:00:00:00:01 10.0.0.1 10.0.0.100"]);
    server.nbctl(&[
        "set",
        "logical_switch_port",
        "p1",
        "options:a=1",
        "options:b=2",
        "external_ids:owner=me",
    ]);
    server.nbctl(&["remove", "logical_switch_port", "p1", "options", "a"]);
    server.nbctl(&["set", "logical_switch_port", "p1", "options:b=3"]);
    wait_until_async("p1 options b=3", Duration::from_secs(5), || {
        LogicalSwitchPort::all(&client.cache())
            .iter()
            .any(|port| port.options.get("b").map(String::as_str) == Some("3"))
    })
    .await;
    let port = LogicalSwitchPort::all(&client.cache()).remove(0);
    assert_eq!(port.port_security.len(), 1);
    assert_eq!(port.options.len(), 1, "{:?}", port.options);
    assert_eq!(port.external_ids.get("owner").map(String::as_str), Some("me"));
    assert_cache_matches_server(&client, &server.unix_remote()).await;

    server.nbctl(&["lsp-del", "p1"]);
    let event = next_event(&mut events, Duration::from_secs(5), |event| {
        matches!(event, ClientEvent::Changed(changes) if changes.iter().any(|c| c.table == nb::LOGICAL_SWITCH_PORT && c.new.is_none()))
    })
    .await;
    assert!(matches!(event, ClientEvent::Changed(_)));
    assert_eq!(client.cache().len(nb::LOGICAL_SWITCH_PORT), 0);
    assert_cache_matches_server(&client, &server.unix_remote()).await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_is_killed_and_the_cache_equals_the_server_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = OvsdbServer::nb(dir.path());
    server.nbctl(&["ls-add", "before"]);
    let (client, mut events) = Client::start_subscribed(fast_config(&server.unix_remote()));
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    assert_cache_matches_server(&client, &server.unix_remote()).await;
    let generation = client.state().generation;

    // Killed, then replaced by a server whose database says something else entirely: rows the
    // client cached must go, new ones must come.
    server.kill();
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Disconnected { .. })
    })
    .await;
    std::fs::remove_file(&server.db_path).unwrap();
    common::run(
        "ovsdb-tool",
        &["create", server.db_path.to_str().unwrap(), common::NB_SCHEMA],
    );
    server.start();
    server.nbctl(&["ls-add", "after", "--", "lsp-add", "after", "p-after"]);
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    assert!(client.state().generation > generation);
    assert_cache_matches_server(&client, &server.unix_remote()).await;
    let names: Vec<String> = LogicalSwitch::all(&client.cache())
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["after".to_string()]);

    // And a write through the client works on the new connection.
    let ops = switch_with_port("sw-new", "vip-new");
    client.transact(&ops).await.unwrap();
    assert!(server.nbctl(&["show"]).contains("vip-new"));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_survives_the_servers_inactivity_probe() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let mut config = fast_config(&server.tcp_remote());
    // Our own probe would keep the server's timer from firing; switch it off so only our answers
    // to the server's `echo` keep the session alive.
    config.connection.probe_interval = None;
    let (client, mut events) = Client::start_subscribed(config);
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    // ovsdb-server probes a TCP client after 5 s of silence and drops it 5 s later if unanswered;
    // answered, it probes again after 5 s more. Barrier: its second probe (checked below to be on
    // the same session: no reconnect), so the first was answered.
    let probes = || server.log().matches("send request, method=\"echo\"").count();
    common::wait_until_async("the server's second probe", Duration::from_secs(20), || probes() >= 2).await;
    assert_eq!(client.state().generation, 1, "the client reconnected");
    assert!(client.state().is_connected());
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::Disconnected { .. }),
            "disconnected while idle: {event:?}"
        );
    }
    assert!(
        server.log().contains("send request, method=\"echo\""),
        "the server did send its probe"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_probe_drops_a_server_that_stopped_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::nb(dir.path());
    let mut config = fast_config(&server.tcp_remote());
    config.connection.probe_interval = Some(Duration::from_millis(500));
    let (client, mut events) = Client::start_subscribed(config);
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    server.signal("STOP");
    let event = next_event(&mut events, Duration::from_secs(5), |event| {
        matches!(event, ClientEvent::Disconnected { .. })
    })
    .await;
    server.signal("CONT");
    match event {
        ClientEvent::Disconnected { error } => assert!(error.contains("timed out"), "{error}"),
        _ => unreachable!(),
    }
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_cluster_keeps_taking_writes_after_its_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NbCluster::start(dir.path());
    let (client, mut events) = Client::start_subscribed(fast_config(&cluster.remotes()));
    next_event(&mut events, Duration::from_secs(20), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    client
        .transact(&switch_with_port("sw-before", "vip-before"))
        .await
        .unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    // The client writes only through the leader.
    let connected_to = client.state().connection.unwrap().remote().to_string();
    assert_eq!(connected_to, cluster.members[leader].tcp_remote());

    cluster.members[leader].kill();
    for index in 0..20 {
        let ops = switch_with_port(&format!("sw-after-{index}"), &format!("vip-after-{index}"));
        // A write in flight when the leader dies has an unknown outcome (`Disconnected`): the
        // caller repeats it, as the sync does. The port name is indexed, so a repeat of a write
        // that did commit is refused rather than duplicated; the count below proves it.
        let mut outcome_unknown = false;
        loop {
            match client.transact(&ops).await {
                Ok(_) => break,
                Err(OvsdbError::Disconnected | OvsdbError::ConnectionLost(_)) => outcome_unknown = true,
                Err(OvsdbError::Transaction(_)) if outcome_unknown => break,
                Err(error) => panic!("write {index} after the leader died: {error}"),
            }
        }
    }
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    assert_eq!(
        client.state().connection.unwrap().remote().to_string(),
        cluster.members[new_leader].tcp_remote()
    );
    let survivor = &cluster.members[new_leader];
    let ports = survivor.nbctl(&["--columns=name", "--bare", "list", "logical_switch_port"]);
    assert_eq!(
        ports.lines().filter(|line| line.starts_with("vip-")).count(),
        21,
        "{ports}"
    );
    assert_cache_matches_server(&client, &survivor.unix_remote()).await;

    // A clustered server keeps history, so a plain reconnect resumes with monitor_cond_since.
    client.force_reconnect();
    let event = next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    assert!(
        matches!(event, ClientEvent::Resynced { resumed: true, .. }),
        "{event:?}"
    );
    assert_cache_matches_server(&client, &survivor.unix_remote()).await;
    client.shutdown().await;
}

fn make_certificates(dir: &std::path::Path, prefix: &str) -> (TlsPaths, TlsPaths) {
    let mut issued = common::issue_certificates(dir, prefix, &["ovsdb-server", "ovn-vipd"]).into_iter();
    (issued.next().unwrap(), issued.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_remote_with_certificates_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let (server_tls, client_tls) = make_certificates(dir.path(), "good");
    let server = OvsdbServer::nb_ssl(dir.path(), server_tls);
    server.nbctl(&["ls-add", "over-tls"]);
    let mut config = fast_config(&server.tcp_remote());
    assert!(server.tcp_remote().starts_with("ssl:"));
    config.tls = Some(TlsFiles {
        private_key: client_tls.private_key.clone(),
        certificate: client_tls.certificate.clone(),
        ca_certificate: client_tls.ca_certificate.clone(),
    });
    let (client, mut events) = Client::start_subscribed(config);
    next_event(&mut events, Duration::from_secs(10), |event| {
        matches!(event, ClientEvent::Resynced { .. })
    })
    .await;
    assert_eq!(LogicalSwitch::all(&client.cache())[0].name, "over-tls");
    client.transact(&switch_with_port("sw-tls", "vip-tls")).await.unwrap();
    assert!(server.nbctl(&["show"]).contains("vip-tls"));
    client.shutdown().await;

    // A client whose CA did not sign the server's certificate refuses the server.
    let (_, stranger) = make_certificates(dir.path(), "other");
    let files = TlsFiles {
        private_key: stranger.private_key,
        certificate: stranger.certificate,
        ca_certificate: stranger.ca_certificate,
    };
    let refused = Connection::open(
        &Remote::parse(&server.tcp_remote()).unwrap(),
        Some(&files),
        &ConnectionOptions::default(),
    )
    .await;
    assert!(refused.is_err(), "a server signed by another CA must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_missing_a_needed_column_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::NB_SCHEMA).unwrap()).unwrap();
    let removed = schema["tables"]["Logical_Switch_Port"]["columns"]
        .as_object_mut()
        .unwrap()
        .remove("port_security");
    assert!(removed.is_some());
    let schema_path = dir.path().join("nb-without-port-security.ovsschema");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let server = OvsdbServer::standalone(dir.path(), "nb", &schema_path);
    let client = Client::start(fast_config(&server.unix_remote()));
    let mut state = client.watch_state();
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|state| state.last_error.is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let error = state.last_error.unwrap();
    assert!(
        error.contains("table Logical_Switch_Port") && error.contains("no column port_security"),
        "{error}"
    );
    assert!(state.connection.is_none(), "a mismatched server is not used");
    client.shutdown().await;
}
