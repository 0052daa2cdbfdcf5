//! The cluster database's schema (`deploy/ovn-vipd.ovsschema`, database `OVN_VIPD`), checked by
//! the real `ovsdb-tool` and `ovsdb-server`: it makes standalone and clustered databases, and its
//! indexes refuse a second owner of an address or a MAC in a subnet at commit time, whoever
//! sends it. (The daemon in clustered mode: tests/cluster.rs.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::OvsdbServer;
use ovn_vipd::ovsdb::{Client, ClientConfig, Operation, OvsdbError, Remote, Row, Value};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ovn-vipd.ovsschema");

fn allocation(table: &str, column: &str, subnet: &str, value: &str, owner: &str) -> Operation {
    Operation::Insert {
        table: table.into(),
        row: Row::from([
            ("subnet".to_string(), Value::string(subnet.to_string())),
            (column.to_string(), Value::string(value.to_string())),
            ("owner".to_string(), Value::string(owner.to_string())),
        ]),
        uuid_name: None,
    }
}

fn constraint_violation(result: Result<Vec<ovn_vipd::ovsdb::OperationResult>, OvsdbError>) -> String {
    match result {
        Err(OvsdbError::Transaction(error)) => {
            assert_eq!(error.error, "constraint violation", "{error:?}");
            error.details.unwrap_or_default()
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

#[test]
fn the_schema_makes_standalone_and_clustered_databases() {
    let dir = tempfile::tempdir().unwrap();
    common::run(
        "ovsdb-tool",
        &["create", dir.path().join("s.db").to_str().unwrap(), SCHEMA],
    );
    common::run(
        "ovsdb-tool",
        &[
            "create-cluster",
            dir.path().join("c.db").to_str().unwrap(),
            SCHEMA,
            "tcp:127.0.0.1:6647",
        ],
    );
    let name = common::run("ovsdb-tool", &["schema-name", SCHEMA]);
    assert_eq!(name.trim(), "OVN_VIPD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_or_mac_cannot_get_a_second_owner_in_a_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let server = OvsdbServer::standalone(dir.path(), "vipd", Path::new(SCHEMA));
    let client = Client::start(ClientConfig::new(
        Remote::parse_list(&server.unix_remote()).unwrap(),
        "OVN_VIPD",
    ));
    client.wait_connected(Duration::from_secs(10)).await.unwrap();
    client
        .transact(&[
            allocation("Address", "address", "ovn-default", "10.16.0.5", "vip/a"),
            allocation("MAC", "mac", "ovn-default", "0a:00:00:00:00:05", "vip/a"),
        ])
        .await
        .expect("first owner");
    // The same address in another subnet is another allocation.
    client
        .transact(&[allocation("Address", "address", "other", "10.16.0.5", "vip/c")])
        .await
        .expect("another subnet");
    let details = constraint_violation(
        client
            .transact(&[allocation("Address", "address", "ovn-default", "10.16.0.5", "vip/b")])
            .await,
    );
    assert!(details.contains("index"), "{details}");
    constraint_violation(
        client
            .transact(&[allocation("MAC", "mac", "ovn-default", "0a:00:00:00:00:05", "vip/b")])
            .await,
    );
    // One Active row at most (the active's epoch and address).
    let active = |epoch: i64| Operation::Insert {
        table: "Active".into(),
        row: Row::from([
            ("epoch".to_string(), Value::Atom(ovn_vipd::ovsdb::Atom::Integer(epoch))),
            ("daemon".to_string(), Value::string("a".to_string())),
        ]),
        uuid_name: None,
    };
    client.transact(&[active(1)]).await.expect("one Active row");
    constraint_violation(client.transact(&[active(2)]).await);
    client.shutdown().await;
}
