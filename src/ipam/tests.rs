use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_assert_ne, prop_oneof, proptest, Strategy as PropStrategy,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn v4_subnet(cidr: &str, excludes: &[&str], strategy: Strategy) -> SubnetIpam {
    SubnetIpam::new(SubnetIpamConfig {
        cidr_v4: Some(cidr.parse().unwrap()),
        exclude_ips: excludes.iter().map(|e| e.to_string()).collect(),
        strategy,
        ..Default::default()
    })
    .unwrap()
}

fn dual(v4: &str, v6: &str) -> SubnetIpam {
    SubnetIpam::new(SubnetIpamConfig {
        cidr_v4: Some(v4.parse().unwrap()),
        cidr_v6: Some(v6.parse().unwrap()),
        strategy: Strategy::Sequential,
        ..Default::default()
    })
    .unwrap()
}

fn dynamic(ipam: &mut SubnetIpam, owner: &str) -> Result<Allocation, IpamError> {
    ipam.allocate(owner, &AllocationRequest::default())
}

fn ip4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

#[test]
fn gateway_defaults_to_the_first_address_and_is_never_handed_out() {
    let mut ipam = v4_subnet("10.16.0.0/29", &[], Strategy::Sequential);
    assert_eq!(ipam.gateway_v4(), Some(ip4("10.16.0.1")));
    let mut got = Vec::new();
    while let Ok(allocation) = dynamic(&mut ipam, &format!("o{}", got.len())) {
        got.push(allocation.v4.unwrap());
    }
    // .0 network, .1 gateway, .7 broadcast: .2 to .6 remain.
    assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(10, 16, 0, i)).collect::<Vec<_>>());
    assert_eq!(
        dynamic(&mut ipam, "late"),
        Err(IpamError::SubnetFull { family: Family::V4 })
    );
    assert!(IpamError::SubnetFull { family: Family::V4 }
        .to_string()
        .contains("subnet full"));
}

#[test]
fn a_given_gateway_is_kept_out_and_checked() {
    let mut ipam = SubnetIpam::new(SubnetIpamConfig {
        cidr_v4: Some("10.16.0.0/30".parse().unwrap()),
        gateway_v4: Some(ip4("10.16.0.2")),
        strategy: Strategy::Sequential,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(dynamic(&mut ipam, "a").unwrap().v4, Some(ip4("10.16.0.1")));
    assert!(dynamic(&mut ipam, "b").is_err());
    for (gateway, cidr) in [
        ("10.17.0.1", "10.16.0.0/16"),
        ("10.16.0.0", "10.16.0.0/16"),
        ("10.16.255.255", "10.16.0.0/16"),
    ] {
        let refused = SubnetIpam::new(SubnetIpamConfig {
            cidr_v4: Some(cidr.parse().unwrap()),
            gateway_v4: Some(ip4(gateway)),
            ..Default::default()
        });
        assert!(
            matches!(refused, Err(IpamError::InvalidGateway { .. })),
            "{gateway}: {refused:?}"
        );
    }
}

#[test]
fn static_refusals_name_their_reason() {
    let mut ipam = v4_subnet("10.16.0.0/16", &[], Strategy::Random);
    let request = |ip: &str| AllocationRequest {
        v4: Some(ip4(ip)),
        ..Default::default()
    };
    assert!(matches!(
        ipam.allocate("a", &request("10.17.0.5")),
        Err(IpamError::OutsideCidr { .. })
    ));
    assert!(matches!(
        ipam.allocate("a", &request("10.16.0.1")),
        Err(IpamError::IsGateway { .. })
    ));
    assert!(matches!(
        ipam.allocate("a", &request("10.16.0.0")),
        Err(IpamError::Reserved { what: "network", .. })
    ));
    assert!(matches!(
        ipam.allocate("a", &request("10.16.255.255")),
        Err(IpamError::Reserved { what: "broadcast", .. })
    ));
    ipam.allocate("vip/static", &request("10.16.0.121")).unwrap();
    let error = ipam.allocate("vip/other", &request("10.16.0.121")).unwrap_err();
    assert_eq!(error.to_string(), "10.16.0.121 is already owned by vip/static");
    let v6 = AllocationRequest {
        v6: Some("fd00::5".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        ipam.allocate("b", &v6),
        Err(IpamError::FamilyNotInSubnet { .. })
    ));
    // Nothing was taken by the refusals.
    assert_eq!(ipam.used_v4(), 1);
}

#[test]
fn excluded_addresses_single_range_cidr_and_clipping() {
    let ipam = v4_subnet(
        "10.16.0.0/24",
        &[
            "10.16.0.2",
            "10.16.0.10..10.16.0.12",
            "10.16.0.64/30",
            "10.15.0.0/16",
            "fd00::1",
            "10.16.0.250..10.17.0.5",
        ],
        Strategy::Sequential,
    );
    for excluded in [
        "10.16.0.2",
        "10.16.0.10",
        "10.16.0.11",
        "10.16.0.12",
        "10.16.0.65",
        "10.16.0.254",
    ] {
        assert!(ipam.is_excluded(IpAddr::V4(ip4(excluded))), "{excluded}");
    }
    assert!(!ipam.is_excluded(IpAddr::V4(ip4("10.16.0.3"))));
    // 254 usable - gateway - 1 - 3 - 4 - 5 (250..254) = 240
    assert_eq!(ipam.free_v4(), 254 - 1 - 1 - 3 - 4 - 5);
    for bad in [
        "10.16.0.300",
        "10.16.0.5..fd00::1",
        "10.16.0.9..10.16.0.5",
        "nonsense",
        "10.16.0.0/33",
    ] {
        let refused = SubnetIpam::new(SubnetIpamConfig {
            cidr_v4: Some("10.16.0.0/24".parse().unwrap()),
            exclude_ips: vec![bad.to_string()],
            ..Default::default()
        });
        match refused {
            Err(IpamError::InvalidExclude { entry, .. }) => assert_eq!(entry, bad),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn dynamic_never_returns_excluded_but_static_may() {
    let mut ipam = v4_subnet("10.16.0.0/29", &["10.16.0.2..10.16.0.5"], Strategy::Random);
    let first = dynamic(&mut ipam, "a").unwrap().v4.unwrap();
    assert_eq!(first, ip4("10.16.0.6"));
    assert!(dynamic(&mut ipam, "b").is_err());
    let reserved = ipam.allocate(
        "operator",
        &AllocationRequest {
            v4: Some(ip4("10.16.0.3")),
            ..Default::default()
        },
    );
    assert_eq!(reserved.unwrap().v4, Some(ip4("10.16.0.3")));
    // Released, an excluded address stays excluded.
    ipam.release("operator");
    assert!(dynamic(&mut ipam, "c").is_err());
}

#[test]
fn released_addresses_wait_until_the_fresh_ones_are_gone() {
    let mut ipam = v4_subnet("10.16.0.0/29", &[], Strategy::Sequential);
    let a = dynamic(&mut ipam, "a").unwrap().v4.unwrap();
    let b = dynamic(&mut ipam, "b").unwrap().v4.unwrap();
    ipam.release("a");
    ipam.release("b");
    let mut next = Vec::new();
    for owner in ["c", "d", "e", "f", "g"] {
        next.push(dynamic(&mut ipam, owner).unwrap().v4.unwrap());
    }
    // Three never-used addresses first, then the released ones, oldest first.
    assert_eq!(&next[3..], &[a, b]);
    assert!(!next[..3].contains(&a) && !next[..3].contains(&b));
}

#[test]
fn a_static_request_may_take_an_address_waiting_for_reuse() {
    let mut ipam = v4_subnet("10.16.0.0/29", &[], Strategy::Sequential);
    let a = dynamic(&mut ipam, "a").unwrap().v4.unwrap();
    ipam.release("a");
    let again = ipam
        .allocate(
            "b",
            &AllocationRequest {
                v4: Some(a),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(again.v4, Some(a));
    ipam.release("b");
    assert_eq!(ipam.used_v4(), 0);
}

/// A failed write puts back what it released (`restore`); an address put back while it waited
/// for reuse must not be handed out again (it was, to a second owner, before the fix).
#[test]
fn an_address_restored_while_waiting_for_reuse_is_not_handed_out_again() {
    let mut ipam = v4_subnet("10.16.0.0/29", &[], Strategy::Sequential);
    let held = dynamic(&mut ipam, "a").unwrap();
    ipam.release("a");
    let request = AllocationRequest {
        v4: held.v4,
        v6: None,
        mac: Some(held.mac),
    };
    ipam.restore("a", &request).unwrap();
    // Every remaining address, never-used ones first, then the reuse queue.
    let mut handed = Vec::new();
    while let Ok(allocation) = dynamic(&mut ipam, &format!("o{}", handed.len())) {
        handed.push(allocation.v4.unwrap());
    }
    assert!(
        !handed.contains(&held.v4.unwrap()),
        "{:?} handed out again: {handed:?}",
        held.v4
    );
    assert_eq!(ipam.release("a").map(|a| a.v4), Some(held.v4));
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let mut ipam = dual("10.16.0.0/29", "fd00::/64");
    let both = dynamic(&mut ipam, "a").unwrap();
    assert!(both.v4.is_some() && both.v6.is_some());
    // Only one family given: that one static, the other dynamic.
    let given = ipam
        .allocate(
            "b",
            &AllocationRequest {
                v6: Some("fd00::0:0:0:abc".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(given.v6, Some("fd00::abc".parse::<Ipv6Addr>().unwrap()));
    assert!(given.v4.is_some());
    // An IPv6 conflict leaves IPv4 untouched.
    let used_before = ipam.used_v4();
    let conflict = ipam.allocate(
        "c",
        &AllocationRequest {
            v6: given.v6,
            ..Default::default()
        },
    );
    assert!(matches!(conflict, Err(IpamError::AddressInUse { .. })));
    assert_eq!(ipam.used_v4(), used_before);
    // IPv4 exhausted: the IPv6 address is not taken either.
    while ipam.free_v4() > 0 {
        let owner = format!("fill{}", ipam.used_v4());
        dynamic(&mut ipam, &owner).unwrap();
    }
    let used_v6 = ipam.used_v6();
    assert!(dynamic(&mut ipam, "z").is_err());
    assert_eq!(ipam.used_v6(), used_v6);
}

#[test]
fn macs_are_local_unicast_unique_and_validated() {
    let gateway_mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    let mut ipam = SubnetIpam::new(SubnetIpamConfig {
        cidr_v4: Some("10.16.0.0/16".parse().unwrap()),
        gateway_mac: Some(gateway_mac),
        ..Default::default()
    })
    .unwrap();
    let mut seen = HashSet::new();
    for index in 0..500 {
        let mac = dynamic(&mut ipam, &format!("o{index}")).unwrap().mac;
        assert!(!mac.is_multicast() && mac.octets()[0] & 2 == 2);
        assert!(seen.insert(mac));
    }
    let only_mac: MacAddr = "00:00:00:f0:db:25".parse().unwrap();
    let allocation = ipam
        .allocate(
            "mac-only",
            &AllocationRequest {
                mac: Some(only_mac),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(allocation.mac, only_mac);
    assert!(allocation.v4.is_some());
    let again = ipam.allocate(
        "other",
        &AllocationRequest {
            mac: Some(only_mac),
            ..Default::default()
        },
    );
    assert!(matches!(again, Err(IpamError::MacInUse { .. })));
    let gateway = ipam.allocate(
        "other",
        &AllocationRequest {
            mac: Some(gateway_mac),
            ..Default::default()
        },
    );
    assert!(matches!(gateway, Err(IpamError::MacInUse { .. })));
    let multicast = ipam.allocate(
        "other",
        &AllocationRequest {
            mac: Some("01:00:5e:00:00:01".parse().unwrap()),
            ..Default::default()
        },
    );
    assert!(matches!(multicast, Err(IpamError::InvalidMac { .. })));
}

#[test]
fn an_owner_asking_again_gets_what_it_holds() {
    let mut ipam = v4_subnet("10.16.0.0/24", &[], Strategy::Random);
    let first = dynamic(&mut ipam, "a").unwrap();
    assert_eq!(dynamic(&mut ipam, "a").unwrap(), first);
    // Another address than the random one it holds (it was .200 once in 253 runs).
    let other = if first.v4 == Some(ip4("10.16.0.200")) {
        "10.16.0.201"
    } else {
        "10.16.0.200"
    };
    let different = ipam.allocate(
        "a",
        &AllocationRequest {
            v4: Some(ip4(other)),
            ..Default::default()
        },
    );
    assert_eq!(different, Err(IpamError::OwnerHasDifferentAllocation));
}

#[test]
fn prefix_bounds_and_large_spaces() {
    for (cidr, ok) in [
        ("10.0.0.0/8", true),
        ("10.0.0.0/30", true),
        ("10.0.0.0/31", false),
        ("10.0.0.0/7", false),
        ("10.0.0.1/24", false),
    ] {
        let result = SubnetIpam::new(SubnetIpamConfig {
            cidr_v4: Some(cidr.parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(result.is_ok(), ok, "{cidr}");
    }
    for (cidr, ok) in [
        ("fd00::/64", true),
        ("fd00::/48", true),
        ("fd00::/65", true),
        ("fd00:10:16::/112", true),
        ("fd00::/120", true),
        ("fd00::/126", true),
        ("fd00::/127", true),
        ("fd00::/128", false),
        ("fd00::/7", false),
    ] {
        let result = SubnetIpam::new(SubnetIpamConfig {
            cidr_v6: Some(cidr.parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(result.is_ok(), ok, "{cidr}");
    }
    let mut big = SubnetIpam::new(SubnetIpamConfig {
        cidr_v4: Some("10.0.0.0/8".parse().unwrap()),
        cidr_v6: Some("fd00::/48".parse().unwrap()),
        ..Default::default()
    })
    .unwrap();
    for index in 0..1000 {
        dynamic(&mut big, &format!("o{index}")).unwrap();
    }
    assert_eq!(big.free_v4(), (1u128 << 24) - 2 - 1 - 1000);
    assert_eq!(big.used_v6(), 1000);
}

/// Issue #16 case 5: Kube-OVN's IPv6 pod CIDRs are /112 (and /120, /126, /127); IPv6 has no
/// broadcast, so the last address is usable, as gateway or as an allocation.
#[test]
fn ipv6_subnets_longer_than_64_follow_ipv6_rules() {
    let mut ipam = SubnetIpam::new(SubnetIpamConfig {
        cidr_v6: Some("190:255::1:0/112".parse().unwrap()),
        gateway_v6: Some("190:255::1:ffff".parse().unwrap()),
        strategy: Strategy::Sequential,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ipam.gateway_v6(), Some("190:255::1:ffff".parse().unwrap()));
    assert_eq!(ipam.free_v6(), 65_535 - 1);
    let first = dynamic(&mut ipam, "a").unwrap();
    assert_eq!(first.v6, Some("190:255::1:1".parse().unwrap()));

    let mut small = SubnetIpam::new(SubnetIpamConfig {
        cidr_v6: Some("fd00::/126".parse().unwrap()),
        strategy: Strategy::Sequential,
        ..Default::default()
    })
    .unwrap();
    // fd00::1 is the default gateway; fd00::2 and fd00::3 (no broadcast in IPv6) are free.
    assert_eq!(dynamic(&mut small, "a").unwrap().v6, Some("fd00::2".parse().unwrap()));
    assert_eq!(dynamic(&mut small, "b").unwrap().v6, Some("fd00::3".parse().unwrap()));
    assert!(matches!(
        dynamic(&mut small, "c"),
        Err(IpamError::SubnetFull { family: Family::V6 })
    ));
}

#[test]
fn restore_rebuilds_without_delay_and_refuses_double_owners() {
    let mut ipam = v4_subnet("10.16.0.0/29", &["10.16.0.2"], Strategy::Sequential);
    let mac: MacAddr = "02:00:00:00:00:02".parse().unwrap();
    ipam.restore(
        "vip/a",
        &AllocationRequest {
            v4: Some(ip4("10.16.0.2")),
            v6: None,
            mac: Some(mac),
        },
    )
    .unwrap();
    assert_eq!(ipam.owner_of_ip(IpAddr::V4(ip4("10.16.0.2"))), Some("vip/a"));
    let twice = ipam.restore(
        "vip/b",
        &AllocationRequest {
            v4: Some(ip4("10.16.0.2")),
            v6: None,
            mac: Some("02:00:00:00:00:03".parse().unwrap()),
        },
    );
    assert!(matches!(twice, Err(IpamError::AddressInUse { .. })));
    let mac_twice = ipam.restore(
        "vip/c",
        &AllocationRequest {
            v4: Some(ip4("10.16.0.3")),
            v6: None,
            mac: Some(mac),
        },
    );
    assert!(matches!(mac_twice, Err(IpamError::MacInUse { .. })));
    assert_eq!(dynamic(&mut ipam, "d").unwrap().v4, Some(ip4("10.16.0.3")));
}

#[derive(Debug, Clone)]
enum Op {
    Dynamic(u8),
    Static(u8, u8),
    Release(u8),
}

fn op() -> impl PropStrategy<Value = Op> {
    prop_oneof![
        (0u8..24).prop_map(Op::Dynamic),
        ((0u8..24), any::<u8>()).prop_map(|(owner, host)| Op::Static(owner, host)),
        (0u8..24).prop_map(Op::Release),
    ]
}

proptest! {
    /// Over random sequences of allocations and releases: no address or MAC is owned twice, the
    /// gateway and excluded addresses never go out dynamically, counters add up, and a full
    /// subnet says so.
    #[test]
    fn nothing_is_ever_owned_twice(ops in prop::collection::vec(op(), 1..200), sequential in any::<bool>(), seed in any::<u64>()) {
        let strategy = if sequential { Strategy::Sequential } else { Strategy::Random };
        let mut ipam = SubnetIpam::new(SubnetIpamConfig {
            cidr_v4: Some("10.16.0.0/28".parse().unwrap()),
            cidr_v6: Some("fd00::/64".parse().unwrap()),
            exclude_ips: vec!["10.16.0.5..10.16.0.6".into(), "fd00::2".into()],
            strategy,
            ..Default::default()
        }).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut statics: HashSet<String> = HashSet::new();
        for op in ops {
            match op {
                Op::Dynamic(owner) => {
                    let owner = format!("o{owner}");
                    let before = ipam.allocation_of(&owner).copied();
                    match ipam.allocate_with(&owner, &AllocationRequest::default(), &mut rng) {
                        Ok(allocation) => {
                            if before.is_none() {
                                let v4 = allocation.v4.unwrap();
                                prop_assert_ne!(v4, Ipv4Addr::new(10, 16, 0, 1));
                                prop_assert!(!ipam.is_excluded(IpAddr::V4(v4)) || statics.contains(&owner));
                                prop_assert!(!ipam.is_excluded(IpAddr::V6(allocation.v6.unwrap())));
                                prop_assert!(allocation.v6.is_some());
                            }
                        }
                        Err(IpamError::SubnetFull { family }) => {
                            prop_assert_eq!(family, Family::V4);
                            prop_assert_eq!(ipam.free_v4(), 0);
                        }
                        Err(error) => prop_assert!(false, "unexpected {error}"),
                    }
                }
                Op::Static(owner, host) => {
                    let owner = format!("s{owner}");
                    let ip = Ipv4Addr::new(10, 16, 0, host % 16);
                    if ipam.allocate_with(&owner, &AllocationRequest { v4: Some(ip), ..Default::default() }, &mut rng).is_ok() {
                        statics.insert(owner);
                    }
                }
                Op::Release(owner) => {
                    ipam.release(&format!("o{owner}"));
                    ipam.release(&format!("s{owner}"));
                }
            }
            // Invariants after every step.
            let mut v4_owners: HashMap<Ipv4Addr, &SharedOwner> = HashMap::new();
            let mut v6_owners = HashMap::new();
            let mut mac_owners = HashMap::new();
            for (owner, allocation) in &ipam.allocations {
                if let Some(v4) = allocation.v4 {
                    prop_assert!(v4_owners.insert(v4, owner).is_none(), "{} owned twice", v4);
                    prop_assert_eq!(ipam.owner_of_ip(IpAddr::V4(v4)), Some(&**owner));
                }
                if let Some(v6) = allocation.v6 {
                    prop_assert!(v6_owners.insert(v6, owner).is_none(), "{} owned twice", v6);
                }
                prop_assert!(mac_owners.insert(allocation.mac, owner).is_none());
            }
            prop_assert_eq!(ipam.used_v4(), v4_owners.len() as u128);
            // 14 usable - gateway - 2 excluded = 11 dynamic addresses; statically owned
            // excluded addresses do not count against them.
            let excluded_owned = v4_owners.keys().filter(|ip| ipam.is_excluded(IpAddr::V4(**ip))).count() as u128;
            prop_assert_eq!(ipam.free_v4() + ipam.used_v4() - excluded_owned, 11);
        }
    }
}

/// Issue #16 case 4: what NB uses elsewhere is skipped by dynamic allocation, refused when
/// asked for, and forgotten afterwards (it is not IPAM's).
#[test]
fn addresses_in_use_elsewhere_are_never_handed_out() {
    let mut ipam = v4_subnet("10.0.9.0/29", &[], Strategy::Sequential);
    let foreign_mac: MacAddr = "3a:11:8e:0b:1f:6a".parse().unwrap();
    let elsewhere = InUseElsewhere {
        ips: [(IpAddr::V4(ip4("10.0.9.2")), "NB port nginx.default".to_string())].into(),
        macs: [(foreign_mac, "NB port nginx.default".to_string())].into(),
    };
    let first = ipam
        .allocate_avoiding("a", &AllocationRequest::default(), &elsewhere)
        .unwrap();
    assert_eq!(first.v4, Some(ip4("10.0.9.3")));
    assert_ne!(first.mac, foreign_mac);
    let asked = AllocationRequest {
        v4: Some(ip4("10.0.9.2")),
        ..Default::default()
    };
    assert!(matches!(
        ipam.allocate_avoiding("b", &asked, &elsewhere),
        Err(IpamError::AddressInUse { owner, .. }) if owner == "NB port nginx.default"
    ));
    let asked_mac = AllocationRequest {
        mac: Some(foreign_mac),
        ..Default::default()
    };
    assert!(matches!(
        ipam.allocate_avoiding("b", &asked_mac, &elsewhere),
        Err(IpamError::MacInUse { .. })
    ));
    // Not remembered: once NB lets it go, it is free again.
    let next = dynamic(&mut ipam, "c").unwrap();
    assert_eq!(next.v4, Some(ip4("10.0.9.2")));
}

/// An address waiting for reuse that NB has meanwhile taken is not handed out from the queue.
#[test]
fn a_reused_address_in_use_elsewhere_is_skipped() {
    let mut ipam = v4_subnet("10.0.9.0/29", &[], Strategy::Sequential);
    for owner in ["a", "b", "c", "d", "e"] {
        dynamic(&mut ipam, owner).unwrap();
    }
    let released = ipam.release("b").unwrap().v4.unwrap();
    let elsewhere = InUseElsewhere {
        ips: [(IpAddr::V4(released), "NB port intruder".to_string())].into(),
        macs: Default::default(),
    };
    assert!(matches!(
        ipam.allocate_avoiding("f", &AllocationRequest::default(), &elsewhere),
        Err(IpamError::SubnetFull { family: Family::V4 })
    ));
    assert!(ipam.allocation_of("f").is_none());
    // Once NB lets it go, the queue still has it.
    assert_eq!(dynamic(&mut ipam, "g").unwrap().v4, Some(released));
}
