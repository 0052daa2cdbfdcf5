//! The store and registry on a real sled store on disk: durability across reopen, the IPAM
//! rebuild, the consistency check, group commit, and migrations from the first format.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ovn_vipd::model::{
    MacAddr, NicSpec, OwnerKind, PodRef, PodSpec, Strategy, Subnet, VipSpec, VipType, ANNOTATION_VIP,
};
use ovn_vipd::registry::{Registry, RegistryError};
use ovn_vipd::store::{self, Store, Write, WriteBatch};

fn subnet(name: &str, v4: Option<&str>, v6: Option<&str>) -> Subnet {
    Subnet {
        name: name.into(),
        logical_switch: name.into(),
        cidr_v4: v4.map(|cidr| cidr.parse().unwrap()),
        cidr_v6: v6.map(|cidr| cidr.parse().unwrap()),
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: vec![],
        strategy: Strategy::Random,
        vpc: ovn_vipd::model::DEFAULT_VPC.into(),
    }
}

fn vip(name: &str, subnet: &str) -> VipSpec {
    VipSpec {
        name: name.into(),
        namespace: String::new(),
        subnet: subnet.into(),
        vip_type: VipType::Reserved,
        v4ip: None,
        v6ip: None,
        mac: None,
        selector: BTreeMap::new(),
    }
}

fn pod(
    namespace: &str,
    name: &str,
    nics: &[(&str, &str)],
    annotations: &[(&str, &str)],
    owner_kind: OwnerKind,
) -> PodSpec {
    PodSpec {
        namespace: namespace.into(),
        name: name.into(),
        labels: BTreeMap::new(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        owner_kind,
        owner_name: String::new(),
        nics: nics
            .iter()
            .map(|(subnet, interface)| NicSpec {
                subnet: subnet.to_string(),
                interface: interface.to_string(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test]
async fn everything_acknowledged_survives_a_reopen_and_ipam_is_rebuilt_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (vips_before, pods_before) = {
        let (registry, report) = Registry::open(dir.path()).unwrap();
        assert!(report.is_clean());
        registry
            .create_subnet(subnet("ovn-default", Some("10.16.0.0/28"), Some("fd00:10:16::/64")))
            .await
            .unwrap();
        registry
            .create_subnet(subnet("net2", Some("10.17.0.0/24"), None))
            .await
            .unwrap();
        // The static VIP first: a random dynamic pick in a /28 could otherwise take its address.
        let mut fixed = vip("static-vip01", "ovn-default");
        fixed.v4ip = Some(Ipv4Addr::new(10, 16, 0, 12));
        fixed.v6ip = Some("fd00:10:16:0::00c".parse().unwrap());
        fixed.mac = Some("00:00:00:f0:db:26".parse().unwrap());
        registry.create_vip(fixed).await.unwrap();
        registry.create_vip(vip("vip-dynamic-01", "ovn-default")).await.unwrap();
        registry.create_vip(vip("pod-use-vip", "ovn-default")).await.unwrap();
        registry
            .bind_pod(pod(
                "default",
                "static-ip",
                &[("ovn-default", "eth0")],
                &[(ANNOTATION_VIP, "pod-use-vip")],
                OwnerKind::Other,
            ))
            .await
            .unwrap();
        registry
            .bind_pod(pod(
                "default",
                "multi",
                &[("ovn-default", "eth0"), ("net2", "net1")],
                &[],
                OwnerKind::Other,
            ))
            .await
            .unwrap();
        (registry.list_vips(), registry.list_pods())
    };
    let (registry, report) = Registry::open(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let strip = |vips: Vec<ovn_vipd::model::Vip>| {
        vips.into_iter()
            .map(|mut vip| {
                vip.conditions.clear();
                vip
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(registry.list_vips()), strip(vips_before.clone()));
    assert_eq!(registry.list_pods(), pods_before);
    // The IPv6 address was stored canonically.
    let fixed = registry.get_vip("static-vip01").unwrap();
    assert_eq!(fixed.v6ip, Some("fd00:10:16::c".parse::<Ipv6Addr>().unwrap()));

    // IPAM knows every owner again: static requests for taken addresses and MACs are refused
    // naming the owner, for both families.
    let mut thief = vip("thief", "ovn-default");
    thief.v4ip = Some(Ipv4Addr::new(10, 16, 0, 12));
    let error = registry.create_vip(thief).await.unwrap_err().to_string();
    assert!(error.contains("already owned by vip/static-vip01"), "{error}");
    let mut thief6 = vip("thief6", "ovn-default");
    thief6.v6ip = Some("fd00:10:16::c".parse().unwrap());
    assert!(registry
        .create_vip(thief6)
        .await
        .unwrap_err()
        .to_string()
        .contains("vip/static-vip01"));
    let mut mac_thief = vip("mac-thief", "ovn-default");
    mac_thief.mac = Some("00:00:00:f0:db:26".parse().unwrap());
    assert!(registry
        .create_vip(mac_thief)
        .await
        .unwrap_err()
        .to_string()
        .contains("mac 00:00:00:f0:db:26 is already owned"));

    // Filling the /28 (13 usable addresses) gives only addresses nobody had before.
    let taken: Vec<IpAddr> = registry.list_vips().iter().flat_map(|vip| vip.addresses()).collect();
    let multi = registry
        .get_pod(&PodRef {
            namespace: "default".into(),
            name: "multi".into(),
        })
        .unwrap();
    let mut seen: Vec<IpAddr> = taken.clone();
    seen.extend(multi.nics.iter().filter_map(|nic| nic.v4ip.map(IpAddr::V4)));
    let mut index = 0;
    loop {
        match registry.create_vip(vip(&format!("fill-{index}"), "ovn-default")).await {
            Ok(filled) => {
                for ip in filled.addresses() {
                    assert!(!seen.contains(&ip), "{ip} handed out twice");
                    seen.push(ip);
                }
            }
            Err(RegistryError::Exhausted(message)) => {
                assert!(message.contains("subnet full"), "{message}");
                break;
            }
            Err(other) => panic!("{other}"),
        }
        index += 1;
    }
    assert_eq!(
        seen.iter().filter(|ip| ip.is_ipv4()).count(),
        13 + 1,
        "13 in ovn-default and one in net2"
    );
}

#[tokio::test]
async fn unbinding_keeps_statefulset_addresses_and_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path()).unwrap();
    registry
        .create_subnet(subnet("ovn-default", Some("10.16.0.0/24"), None))
        .await
        .unwrap();
    registry.create_vip(vip("sts-vip", "ovn-default")).await.unwrap();
    let sts = pod(
        "default",
        "web-0",
        &[("ovn-default", "eth0")],
        &[(ANNOTATION_VIP, "sts-vip")],
        OwnerKind::StatefulSet,
    );
    let bound = registry.bind_pod(sts.clone()).await.unwrap();
    let key = PodRef {
        namespace: "default".into(),
        name: "web-0".into(),
    };
    assert_eq!(registry.get_vip("sts-vip").unwrap().holder, Some(key.clone()));
    // Another pod asking for the held VIP is refused, naming the holder.
    let other = pod(
        "default",
        "other",
        &[("ovn-default", "eth0")],
        &[(ANNOTATION_VIP, "sts-vip")],
        OwnerKind::Other,
    );
    let error = registry.bind_pod(other).await.unwrap_err().to_string();
    assert_eq!(error, "vip sts-vip is in use by pod default/web-0");
    // Deleted and re-created, the StatefulSet pod gets the same VIP back, across a reopen too.
    registry.unbind_pod(&key, false, None).await.unwrap();
    drop(registry);
    let (registry, report) = Registry::open(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let rebound = registry.bind_pod(sts).await.unwrap();
    assert_eq!(rebound.nics, bound.nics);
    // Owner gone: the VIP is free again and its holder cleared.
    registry.unbind_pod(&key, true, None).await.unwrap();
    assert_eq!(registry.get_vip("sts-vip").unwrap().holder, None);
    registry.delete_vip("sts-vip").await.unwrap();
    let report = registry.check().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn the_consistency_check_reports_allocations_without_owners_and_owners_without_allocations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (registry, _) = Registry::open(dir.path()).unwrap();
        registry
            .create_subnet(subnet("ovn-default", Some("10.16.0.0/24"), None))
            .await
            .unwrap();
        registry.create_vip(vip("real", "ovn-default")).await.unwrap();
        let real = registry.get_vip("real").unwrap();
        // Damage the store behind the registry's back.
        let mut batch = WriteBatch::new();
        batch.push(Write::AllocateIp {
            subnet: "ovn-default".into(),
            ip: "10.16.0.200".parse().unwrap(),
            owner: "vip/ghost".into(),
        });
        batch.push(Write::ReleaseMac {
            subnet: "ovn-default".into(),
            mac: real.mac,
        });
        registry.store().apply(&batch).unwrap();
        registry.store().durable().await.unwrap();
    }
    let (_registry, report) = Registry::open(dir.path()).unwrap();
    let text = report.problems.join("\n");
    assert!(
        text.contains("10.16.0.200 in ovn-default is allocated to vip/ghost, which has no record holding it"),
        "{text}"
    );
    assert!(text.contains("vip/real holds mac"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path()).unwrap();
    registry
        .create_subnet(subnet("ovn-default", Some("10.16.0.0/16"), None))
        .await
        .unwrap();
    let registry = Arc::new(registry);
    let flushes_before = registry.store().flush_count();
    let writers: Vec<_> = (0..64)
        .map(|index| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.create_vip(vip(&format!("v{index}"), "ovn-default")).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let flushes = registry.store().flush_count() - flushes_before;
    assert!(flushes >= 1);
    assert!(
        flushes < 64,
        "64 concurrent writers took {flushes} flushes: group commit is not sharing them"
    );
    assert_eq!(registry.list_vips().len(), 64);
}

/// Opens the store once sled's own background thread has let go of a plain `sled::Db` the test
/// used (its file lock outlives the handle by a moment).
fn open_when_released(path: &std::path::Path) -> Result<Store, store::StoreError> {
    common::wait_for_blocking(
        "sled to release the store's lock",
        std::time::Duration::from_secs(5),
        || match Store::open(path) {
            Err(error) if error.to_string().contains("could not acquire lock") => Err(error.to_string()),
            other => Ok(other),
        },
    )
}

/// Builds a store in format 1 by hand (allocation keys as text), the way version 1 wrote it.
fn write_format_1_store(path: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    use store::records::{OwnerRecord, SubnetRecord, SubnetV1, VipRecord, VipV1};
    let db = sled::open(path).unwrap();
    let config = bincode::config::standard();
    let encode = |value: &dyn erased::Encode| value.encode(config);
    mod erased {
        pub trait Encode {
            fn encode(&self, config: bincode::config::Configuration) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn encode(&self, config: bincode::config::Configuration) -> Vec<u8> {
                bincode::serde::encode_to_vec(self, config).unwrap()
            }
        }
    }
    let subnet = SubnetRecord::V1(SubnetV1 {
        name: "ovn-default".into(),
        logical_switch: "ovn-default".into(),
        cidr_v4: Some(([10, 16, 0, 0], 16)),
        cidr_v6: Some(("fd00:10:16::".parse::<Ipv6Addr>().unwrap().octets(), 64)),
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: vec!["10.16.0.2..10.16.0.10".into()],
        sequential: false,
    });
    let vip_record = VipRecord::V1(VipV1 {
        name: "vip-dual".into(),
        namespace: "default".into(),
        subnet: "ovn-default".into(),
        switch_lb_vip: false,
        requested_v4: None,
        requested_v6: None,
        requested_mac: None,
        selector: BTreeMap::from([("app".to_string(), "aap1".to_string())]),
        v4ip: Some([10, 16, 0, 12]),
        v6ip: Some("fd00:10:16::c".parse::<Ipv6Addr>().unwrap().octets()),
        mac: [0, 0, 0, 0xf0, 0xdb, 0x25],
        holder: None,
    });
    db.open_tree("subnets")
        .unwrap()
        .insert("ovn-default", encode(&subnet))
        .unwrap();
    db.open_tree("vips")
        .unwrap()
        .insert("vip-dual", encode(&vip_record))
        .unwrap();
    let owner = encode(&OwnerRecord::V1("vip/vip-dual".into()));
    let ips = db.open_tree("ips").unwrap();
    ips.insert(b"ovn-default\x0010.16.0.12", owner.clone()).unwrap();
    ips.insert(b"ovn-default\x00fd00:10:16::c", owner.clone()).unwrap();
    db.open_tree("macs")
        .unwrap()
        .insert(b"ovn-default\x0000:00:00:f0:db:25", owner.clone())
        .unwrap();
    store::migrations::write_version_for_tests(&db, 1).unwrap();
    (encode(&subnet), owner)
}

#[tokio::test]
async fn a_format_1_store_is_migrated_and_every_record_comes_through() {
    let dir = tempfile::tempdir().unwrap();
    write_format_1_store(dir.path());
    {
        let store = open_when_released(dir.path()).unwrap();
        assert_eq!(store.version().unwrap(), store::CURRENT_VERSION);
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.subnets.len(), 1);
        assert_eq!(
            snapshot.subnets[0].exclude_ips,
            vec!["10.16.0.2..10.16.0.10".to_string()]
        );
        assert_eq!(snapshot.vips.len(), 1);
        let mut ips: Vec<IpAddr> = snapshot.ips.iter().map(|(_, ip, _)| *ip).collect();
        ips.sort();
        assert_eq!(
            ips,
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 16, 0, 12)),
                "fd00:10:16::c".parse().unwrap()
            ]
        );
        assert_eq!(snapshot.macs[0].1, "00:00:00:f0:db:25".parse::<MacAddr>().unwrap());
        assert!(
            Store::check(&snapshot).is_clean(),
            "{:?}",
            Store::check(&snapshot).problems
        );
    }
    // And the registry on top sees the dual-stack VIP, its selector, and IPAM owns its addresses.
    let (registry, report) = Registry::open(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let vip = registry.get_vip("vip-dual").unwrap();
    assert_eq!(vip.v4ip, Some(Ipv4Addr::new(10, 16, 0, 12)));
    assert_eq!(vip.spec.selector.get("app").map(String::as_str), Some("aap1"));
    let mut thief = self::vip("thief", "ovn-default");
    thief.v6ip = Some("fd00:10:16::c".parse().unwrap());
    assert!(registry
        .create_vip(thief)
        .await
        .unwrap_err()
        .to_string()
        .contains("vip/vip-dual"));
}

#[tokio::test]
async fn a_store_from_a_newer_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        store::migrations::write_version_for_tests(&db, 99).unwrap();
    }
    let error = match open_when_released(dir.path()) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a newer store must be refused"),
    };
    assert!(
        error.contains("store format 99") && error.contains(&format!("up to {}", store::CURRENT_VERSION)),
        "{error}"
    );
}

#[tokio::test]
async fn a_health_check_source_is_reserved_while_a_rule_needs_it() {
    use ovn_vipd::model::{LbPort, Protocol, SwitchLbRule};
    let dir = tempfile::tempdir().unwrap();
    let rule = SwitchLbRule {
        name: "web".into(),
        vip: "10.16.0.50".into(),
        namespace: "default".into(),
        selector: BTreeMap::new(),
        endpoints: vec!["10.16.0.8".parse().unwrap()],
        ports: vec![LbPort {
            name: "http".into(),
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
        }],
        session_affinity_timeout: None,
        health_check: true,
    };
    let source = {
        let (registry, _) = Registry::open(dir.path()).unwrap();
        registry
            .create_subnet(subnet("ovn-default", Some("10.16.0.0/16"), None))
            .await
            .unwrap();
        registry.put_switch_lb_rule(rule, false).await.unwrap();
        let sources = registry.health_check_sources();
        let (v4, _) = sources.get("ovn-default").copied().expect("a source address");
        v4.expect("an IPv4 source")
    };
    let (registry, report) = Registry::open(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(
        registry
            .health_check_sources()
            .get("ovn-default")
            .and_then(|(v4, _)| *v4),
        Some(source)
    );
    let mut thief = vip("thief", "ovn-default");
    thief.v4ip = Some(source);
    assert!(registry
        .create_vip(thief)
        .await
        .unwrap_err()
        .to_string()
        .contains("healthcheck/ovn-default"));
    let error = registry.delete_subnet("ovn-default").await.unwrap_err().to_string();
    assert!(error.contains("switch-lb rule web"), "{error}");
    registry.delete_switch_lb_rule("web").await.unwrap();
    assert!(registry.health_check_sources().is_empty());
    assert!(registry.check().unwrap().is_clean());
    registry.delete_subnet("ovn-default").await.unwrap();
    assert!(registry.check().unwrap().is_clean());
}

/// Builds a store in format 3 by hand (a tree per kind, revisions and the change log in trees of
/// their own), the way version 3 wrote it: one dual-stack VIP at revision 7.
fn write_format_3_store(path: &std::path::Path) {
    use store::records::{OwnerRecord, SubnetRecord, SubnetV1, VipRecord, VipV1};
    use store::revisions::ChangeRecord;
    let db = sled::open(path).unwrap();
    let encode = |value: &dyn Fn(bincode::config::Configuration) -> Vec<u8>| value(bincode::config::standard());
    let subnet = SubnetRecord::V1(SubnetV1 {
        name: "ovn-default".into(),
        logical_switch: "ovn-default".into(),
        cidr_v4: Some(([10, 16, 0, 0], 16)),
        cidr_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        exclude_ips: vec![],
        sequential: false,
    });
    let vip = VipRecord::V1(VipV1 {
        name: "vip-a".into(),
        namespace: "default".into(),
        subnet: "ovn-default".into(),
        switch_lb_vip: false,
        requested_v4: None,
        requested_v6: None,
        requested_mac: None,
        selector: BTreeMap::new(),
        v4ip: Some([10, 16, 0, 12]),
        v6ip: None,
        mac: [0, 0, 0, 0xf0, 0xdb, 0x25],
        holder: None,
    });
    let owner = OwnerRecord::V1("vip/vip-a".into());
    let put = |tree: &str, key: &[u8], value: Vec<u8>| {
        db.open_tree(tree).unwrap().insert(key, value).unwrap();
    };
    put(
        "subnets",
        b"ovn-default",
        encode(&|c| bincode::serde::encode_to_vec(&subnet, c).unwrap()),
    );
    put(
        "vips",
        b"vip-a",
        encode(&|c| bincode::serde::encode_to_vec(&vip, c).unwrap()),
    );
    put(
        "ips",
        b"ovn-default\x00\x0a\x10\x00\x0c",
        encode(&|c| bincode::serde::encode_to_vec(&owner, c).unwrap()),
    );
    put(
        "macs",
        b"ovn-default\x00\x00\x00\x00\xf0\xdb\x25",
        encode(&|c| bincode::serde::encode_to_vec(&owner, c).unwrap()),
    );
    // Kind byte 1 (VIP) + name → revision; the log: subnet added at 6, the VIP at 7.
    put("revisions", b"\x00ovn-default", 6u64.to_be_bytes().to_vec());
    put("revisions", b"\x01vip-a", 7u64.to_be_bytes().to_vec());
    for (revision, kind, key) in [(6u64, 0u8, "ovn-default"), (7, 1, "vip-a")] {
        let record = ChangeRecord::V1 {
            kind,
            key: key.into(),
            change: 0,
        };
        put(
            "changes",
            &revision.to_be_bytes(),
            encode(&|c| bincode::serde::encode_to_vec(&record, c).unwrap()),
        );
    }
    // A copy into `records` cut short by a crash (or left before a downgrade) is redone whole:
    // this stale record must not survive the migration.
    put("records", b"\x02ghost", b"not a record".to_vec());
    store::migrations::write_version_for_tests(&db, 3).unwrap();
}

#[tokio::test]
async fn a_format_3_store_moves_into_one_tree_with_its_revisions_and_change_log() {
    let dir = tempfile::tempdir().unwrap();
    write_format_3_store(dir.path());
    {
        let store = open_when_released(dir.path()).unwrap();
        assert_eq!(store.version().unwrap(), 4);
        assert_eq!(store.revision(), 7);
        assert_eq!(store.revision_of(store::Kind::Vip, "vip-a"), Some(7));
        assert_eq!(store.revision_of(store::Kind::Subnet, "ovn-default"), Some(6));
        let (changes, current) = store.changes_since(5).unwrap().unwrap();
        assert_eq!(current, 7);
        assert_eq!(
            changes.iter().map(|change| change.key.as_str()).collect::<Vec<_>>(),
            vec!["ovn-default", "vip-a"]
        );
        let snapshot = store.load().unwrap();
        assert_eq!((snapshot.subnets.len(), snapshot.vips.len()), (1, 1));
        assert_eq!(snapshot.ips.len(), 1);
        assert_eq!(snapshot.macs.len(), 1);
        assert!(
            Store::check(&snapshot).is_clean(),
            "{:?}",
            Store::check(&snapshot).problems
        );
    }
    // The format-3 trees are gone; one left by a crash before its drop is dropped at the next
    // open, and its content is not read.
    {
        let db = common::wait_for_blocking(
            "sled to release the store's lock",
            std::time::Duration::from_secs(5),
            || sled::open(dir.path()).map_err(|error| error.to_string()),
        );
        let names: Vec<String> = db
            .tree_names()
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        for old in ["subnets", "vips", "pods", "slrs", "ips", "macs", "revisions", "changes"] {
            assert!(!names.contains(&old.to_string()), "tree {old} left: {names:?}");
        }
        db.open_tree("vips")
            .unwrap()
            .insert(b"ghost", b"not a record".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let (registry, report) = {
        let dir = dir.path().to_path_buf();
        common::wait_for_blocking(
            "sled to release the store's lock",
            std::time::Duration::from_secs(5),
            || match Registry::open(&dir) {
                Err(error) if error.to_string().contains("could not acquire lock") => Err(error.to_string()),
                other => Ok(other),
            },
        )
        .unwrap()
    };
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(registry.list_vips().len(), 1);
    assert_eq!(
        registry.get_vip("vip-a").unwrap().v4ip,
        Some(Ipv4Addr::new(10, 16, 0, 12))
    );
    // A new write goes on from the migrated revision.
    registry.create_vip(vip("vip-b", "ovn-default")).await.unwrap();
    assert_eq!(registry.revision(store::Kind::Vip, "vip-b"), 8);
}

/// Observed-status changes go to their own channel. A full pass writes one per VIP (100,000 at
/// once at the scale benchmark's size); on the channel of stored changes they overflowed the NB
/// sync's receiver (65,536), which then ran a second full pass right after the first (`events
/// overflowed; full pass` in the log), though the sync ignores status.
#[tokio::test]
async fn status_changes_do_not_reach_the_stored_changes_channel() {
    use ovn_vipd::registry::Change;
    use tokio::sync::broadcast::error::TryRecvError;
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(&dir.path().join("store")).unwrap();
    // Its subnet does not exist: a pending VIP is enough to carry a status.
    registry.create_vip(vip("v", "missing")).await.unwrap();
    let mut stored = registry.subscribe();
    let mut status = registry.subscribe_status();
    assert!(registry.set_vip_conditions("v", Vec::new()));
    assert!(matches!(status.try_recv(), Ok(Change::VipStatus(name)) if name == "v"));
    assert!(matches!(stored.try_recv(), Err(TryRecvError::Empty)));
    registry.delete_vip("v").await.unwrap();
    assert!(matches!(stored.try_recv(), Ok(Change::Vip(name)) if name == "v"));
}
