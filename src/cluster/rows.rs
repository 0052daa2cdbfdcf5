//! The `OVN_VIPD` schema (`deploy/ovn-vipd.ovsschema`) as the store's writes: a batch becomes
//! transaction operations, and monitored row changes become the batch that keeps the sled replica
//! in step. Records are the store's versioned records as JSON in `spec`; allocations are one row
//! each in `Address`/`MAC`, whose indexes on (subnet, address) and (subnet, mac) refuse a second
//! owner at commit.

use std::net::IpAddr;

use serde_json::Value as Json;

use crate::model::{MacAddr, Pod, PodRef, Subnet, SwitchLbRule, Vip};
use crate::ovsdb::{Condition, Operation, Row, RowChange, Value};
use crate::store::records::{PodRecord, SubnetRecord, SwitchLbRuleRecord, VipRecord};
use crate::store::{StoreError, Write, WriteBatch};

pub const DATABASE: &str = "OVN_VIPD";
pub const SUBNET: &str = "Subnet";
pub const VIP: &str = "Vip";
pub const POD: &str = "Pod";
pub const SWITCH_LB_RULE: &str = "Switch_LB_Rule";
pub const ADDRESS: &str = "Address";
pub const MAC: &str = "MAC";
pub const ACTIVE: &str = "Active";

/// Every table of the schema (all monitored).
pub const TABLES: [&str; 7] = [SUBNET, VIP, POD, SWITCH_LB_RULE, ADDRESS, MAC, ACTIVE];

fn spec<T: serde::Serialize>(record: &T) -> Result<Value, StoreError> {
    serde_json::to_string(record)
        .map(Value::string)
        .map_err(|error| StoreError::Encode(error.to_string()))
}

fn eq(column: &str, text: impl Into<String>) -> Condition {
    Condition::equal(column, Value::string(text.into()))
}

fn row(columns: Vec<(&str, Value)>) -> Row {
    columns
        .into_iter()
        .map(|(column, value)| (column.to_string(), value))
        .collect()
}

fn insert(table: &str, columns: Vec<(&str, Value)>) -> Operation {
    Operation::Insert {
        table: table.to_string(),
        row: row(columns),
        uuid_name: None,
    }
}

fn delete(table: &str, conditions: Vec<Condition>) -> Operation {
    Operation::Delete {
        table: table.to_string(),
        conditions,
    }
}

/// The operations of one batch. A record is put as delete-then-insert (the row's index column
/// makes a stale copy impossible); an allocation is inserted after removing only this owner's own
/// row for it, so another owner's row stays and the index refuses the commit.
pub fn operations(batch: &WriteBatch, out: &mut Vec<Operation>) -> Result<(), StoreError> {
    for write in &batch.writes {
        match write {
            Write::PutSubnet(subnet) => {
                out.push(delete(SUBNET, vec![eq("name", &subnet.name)]));
                out.push(insert(
                    SUBNET,
                    vec![
                        ("name", Value::string(subnet.name.clone())),
                        ("spec", spec(&SubnetRecord::from(subnet))?),
                    ],
                ));
            }
            Write::DeleteSubnet(name) => out.push(delete(SUBNET, vec![eq("name", name)])),
            Write::PutVip(vip) => {
                out.push(delete(VIP, vec![eq("name", &vip.spec.name)]));
                out.push(insert(
                    VIP,
                    vec![
                        ("name", Value::string(vip.spec.name.clone())),
                        ("subnet", Value::string(vip.spec.subnet.clone())),
                        ("spec", spec(&VipRecord::from(vip))?),
                    ],
                ));
            }
            Write::DeleteVip(name) => out.push(delete(VIP, vec![eq("name", name)])),
            Write::PutPod(pod) => {
                let key = pod.key();
                out.push(delete(
                    POD,
                    vec![eq("namespace", &key.namespace), eq("name", &key.name)],
                ));
                out.push(insert(
                    POD,
                    vec![
                        ("namespace", Value::string(key.namespace.clone())),
                        ("name", Value::string(key.name.clone())),
                        ("spec", spec(&PodRecord::from(pod))?),
                    ],
                ));
            }
            Write::DeletePod(key) => out.push(delete(
                POD,
                vec![eq("namespace", &key.namespace), eq("name", &key.name)],
            )),
            Write::PutSwitchLbRule(rule) => {
                out.push(delete(SWITCH_LB_RULE, vec![eq("name", &rule.name)]));
                out.push(insert(
                    SWITCH_LB_RULE,
                    vec![
                        ("name", Value::string(rule.name.clone())),
                        ("spec", spec(&SwitchLbRuleRecord::from(rule))?),
                    ],
                ));
            }
            Write::DeleteSwitchLbRule(name) => out.push(delete(SWITCH_LB_RULE, vec![eq("name", name)])),
            Write::AllocateIp { subnet, ip, owner } => {
                out.push(delete(
                    ADDRESS,
                    vec![eq("subnet", subnet), eq("address", ip.to_string()), eq("owner", owner)],
                ));
                out.push(insert(
                    ADDRESS,
                    vec![
                        ("subnet", Value::string(subnet.clone())),
                        ("address", Value::string(ip.to_string())),
                        ("owner", Value::string(owner.clone())),
                    ],
                ));
            }
            Write::ReleaseIp { subnet, ip } => out.push(delete(
                ADDRESS,
                vec![eq("subnet", subnet), eq("address", ip.to_string())],
            )),
            Write::AllocateMac { subnet, mac, owner } => {
                out.push(delete(
                    MAC,
                    vec![eq("subnet", subnet), eq("mac", mac.to_string()), eq("owner", owner)],
                ));
                out.push(insert(
                    MAC,
                    vec![
                        ("subnet", Value::string(subnet.clone())),
                        ("mac", Value::string(mac.to_string())),
                        ("owner", Value::string(owner.clone())),
                    ],
                ));
            }
            Write::ReleaseMac { subnet, mac } => {
                out.push(delete(MAC, vec![eq("subnet", subnet), eq("mac", mac.to_string())]))
            }
        }
    }
    Ok(())
}

fn text<'a>(row: &'a Row, column: &str) -> Result<&'a str, String> {
    row.get(column)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no string column {column}"))
}

fn decode<T: serde::de::DeserializeOwned>(row: &Row) -> Result<T, String> {
    serde_json::from_str(text(row, "spec")?).map_err(|error| format!("spec: {error}"))
}

/// The write a row's removal makes.
fn removal(table: &str, row: &Row) -> Result<Option<Write>, String> {
    Ok(Some(match table {
        SUBNET => Write::DeleteSubnet(text(row, "name")?.to_string()),
        VIP => Write::DeleteVip(text(row, "name")?.to_string()),
        POD => Write::DeletePod(PodRef {
            namespace: text(row, "namespace")?.to_string(),
            name: text(row, "name")?.to_string(),
        }),
        SWITCH_LB_RULE => Write::DeleteSwitchLbRule(text(row, "name")?.to_string()),
        ADDRESS => Write::ReleaseIp {
            subnet: text(row, "subnet")?.to_string(),
            ip: parse_ip(text(row, "address")?)?,
        },
        MAC => Write::ReleaseMac {
            subnet: text(row, "subnet")?.to_string(),
            mac: parse_mac(text(row, "mac")?)?,
        },
        _ => return Ok(None),
    }))
}

/// The write a row's (new) content makes.
fn put(table: &str, row: &Row) -> Result<Option<Write>, String> {
    let to_string = |error: StoreError| error.to_string();
    Ok(Some(match table {
        SUBNET => Write::PutSubnet(Subnet::try_from(decode::<SubnetRecord>(row)?).map_err(to_string)?),
        VIP => Write::PutVip(Vip::from(decode::<VipRecord>(row)?)),
        POD => Write::PutPod(Pod::try_from(decode::<PodRecord>(row)?).map_err(to_string)?),
        SWITCH_LB_RULE => {
            Write::PutSwitchLbRule(SwitchLbRule::try_from(decode::<SwitchLbRuleRecord>(row)?).map_err(to_string)?)
        }
        ADDRESS => Write::AllocateIp {
            subnet: text(row, "subnet")?.to_string(),
            ip: parse_ip(text(row, "address")?)?,
            owner: text(row, "owner")?.to_string(),
        },
        MAC => Write::AllocateMac {
            subnet: text(row, "subnet")?.to_string(),
            mac: parse_mac(text(row, "mac")?)?,
            owner: text(row, "owner")?.to_string(),
        },
        _ => return Ok(None),
    }))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("bad address {text:?}"))
}

fn parse_mac(text: &str) -> Result<MacAddr, String> {
    text.parse().map_err(|_| format!("bad mac {text:?}"))
}

/// A row as JSON (RFC 7047 §5.1 notation), as the replica keeps it.
pub fn row_json(row: &Row) -> Json {
    Json::Object(
        row.iter()
            .map(|(column, value)| (column.to_string(), value.to_json()))
            .collect(),
    )
}

/// The replica step of monitored changes: the store writes (every removal before every put, so a
/// record replaced by a new row of the same name ends up present) and the rows by uuid.
/// A row that cannot be read is an error naming it (the replica is not written).
#[allow(clippy::type_complexity)]
pub fn replica_step(changes: &[RowChange]) -> Result<(WriteBatch, Vec<((String, String), Option<Json>)>), String> {
    let mut removals = Vec::new();
    let mut puts = Vec::new();
    let mut rows = Vec::with_capacity(changes.len());
    for change in changes {
        let name = |error: String| format!("{} row {}: {error}", change.table, change.uuid);
        if let Some(old) = &change.old {
            if let Some(write) = removal(&change.table, old).map_err(name)? {
                removals.push(write);
            }
        }
        if let Some(new) = &change.new {
            if let Some(write) = put(&change.table, new).map_err(name)? {
                puts.push(write);
            }
        }
        rows.push((
            (change.table.clone(), change.uuid.to_string()),
            change.new.as_deref().map(row_json),
        ));
    }
    let mut batch = WriteBatch::new();
    for write in removals.into_iter().chain(puts) {
        batch.push(write);
    }
    Ok((batch, rows))
}
