//! The persisted shapes of every record, versioned: stored bytes outlive the code that wrote
//! them, so each record is an enum with one variant per format, and conversions to and from the
//! domain types live here and nowhere else.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::{
    Attachment, LbPort, MacAddr, NicSpec, OwnerKind, Pending, Pod, PodNic, PodRef, PodSpec, Protocol, Strategy, Subnet,
    SwitchLbRule, Vip, VipSpec, VipType,
};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SubnetRecord {
    V1(SubnetV1),
    /// V1 and the subnet's VPC (V1 records are in the default VPC).
    V2(SubnetV2),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SubnetV1 {
    pub name: String,
    pub logical_switch: String,
    pub cidr_v4: Option<([u8; 4], u8)>,
    pub cidr_v6: Option<([u8; 16], u8)>,
    pub gateway_v4: Option<[u8; 4]>,
    pub gateway_v6: Option<[u8; 16]>,
    pub exclude_ips: Vec<String>,
    pub sequential: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SubnetV2 {
    pub v1: SubnetV1,
    pub vpc: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum VipRecord {
    V1(VipV1),
    /// A VIP whose address part is optional: written for a VIP that holds no addresses yet
    /// (its subnet does not exist, or cannot give what it requests). Allocated VIPs are still
    /// written as V1, so their bytes (and older stores) are unchanged: no migration.
    V2(VipV2),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VipV2 {
    pub name: String,
    pub namespace: String,
    pub subnet: String,
    pub switch_lb_vip: bool,
    pub requested_v4: Option<[u8; 4]>,
    pub requested_v6: Option<[u8; 16]>,
    pub requested_mac: Option<[u8; 6]>,
    pub selector: BTreeMap<String, String>,
    /// What was allocated; `None` while pending.
    pub allocation: Option<VipAllocationV2>,
    pub holder: Option<(String, String)>,
    /// While pending: the Ready condition's (reason, message).
    pub pending: Option<(String, String)>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VipAllocationV2 {
    pub v4ip: Option<[u8; 4]>,
    pub v6ip: Option<[u8; 16]>,
    pub mac: [u8; 6],
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VipV1 {
    pub name: String,
    pub namespace: String,
    pub subnet: String,
    pub switch_lb_vip: bool,
    pub requested_v4: Option<[u8; 4]>,
    pub requested_v6: Option<[u8; 16]>,
    pub requested_mac: Option<[u8; 6]>,
    pub selector: BTreeMap<String, String>,
    pub v4ip: Option<[u8; 4]>,
    pub v6ip: Option<[u8; 16]>,
    pub mac: [u8; 6],
    pub holder: Option<(String, String)>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PodRecord {
    V1(PodV1),
    /// V1 plus each NIC request's static addresses and CNI attachment, and the owner's name
    /// (a VirtualMachine's, for its launcher pods).
    V2(PodV2),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodNicV1 {
    pub interface: String,
    pub subnet: String,
    pub port_name: String,
    pub v4ip: Option<[u8; 4]>,
    pub v6ip: Option<[u8; 16]>,
    pub mac: [u8; 6],
    pub vip: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodV1 {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// 0 other, 1 StatefulSet, 2 VirtualMachine.
    pub owner_kind: u8,
    pub nic_specs: Vec<(String, String)>,
    pub nics: Vec<PodNicV1>,
    pub bound: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NicSpecV2 {
    pub subnet: String,
    pub interface: String,
    pub v4ip: Option<[u8; 4]>,
    pub v6ip: Option<[u8; 16]>,
    pub mac: Option<[u8; 6]>,
    /// (network, container id, node).
    pub attachment: Option<(String, String, String)>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodV2 {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// 0 other, 1 StatefulSet, 2 VirtualMachine.
    pub owner_kind: u8,
    pub nic_specs: Vec<NicSpecV2>,
    pub nics: Vec<PodNicV1>,
    pub bound: bool,
    /// The owner's name (empty in V1-era records and when not given).
    pub owner_name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SwitchLbRuleRecord {
    V1(SwitchLbRuleV1),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LbPortV1 {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    /// 0 tcp, 1 udp, 2 sctp.
    pub protocol: u8,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SwitchLbRuleV1 {
    pub name: String,
    pub vip: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub endpoints: Vec<String>,
    pub ports: Vec<LbPortV1>,
    pub session_affinity_timeout: Option<u32>,
    pub health_check: bool,
}

/// The owner of an address or MAC allocation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OwnerRecord {
    V1(String),
}

fn v4(bytes: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(bytes)
}

fn v6(bytes: [u8; 16]) -> Ipv6Addr {
    Ipv6Addr::from(bytes)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

impl From<&Subnet> for SubnetRecord {
    fn from(subnet: &Subnet) -> SubnetRecord {
        SubnetRecord::V2(SubnetV2 {
            v1: SubnetV1 {
                name: subnet.name.clone(),
                logical_switch: subnet.logical_switch.clone(),
                cidr_v4: subnet.cidr_v4.map(|net| (net.addr().octets(), net.prefix_len())),
                cidr_v6: subnet.cidr_v6.map(|net| (net.addr().octets(), net.prefix_len())),
                gateway_v4: subnet.gateway_v4.map(|ip| ip.octets()),
                gateway_v6: subnet.gateway_v6.map(|ip| ip.octets()),
                exclude_ips: subnet.exclude_ips.clone(),
                sequential: subnet.strategy == Strategy::Sequential,
            },
            vpc: subnet.vpc.clone(),
        })
    }
}

impl TryFrom<SubnetRecord> for Subnet {
    type Error = StoreError;
    fn try_from(record: SubnetRecord) -> Result<Subnet, StoreError> {
        let (record, vpc) = match record {
            SubnetRecord::V1(record) => (record, crate::model::DEFAULT_VPC.to_string()),
            SubnetRecord::V2(SubnetV2 { v1, vpc }) => (v1, vpc),
        };
        Ok(Subnet {
            vpc,
            cidr_v4: record
                .cidr_v4
                .map(|(addr, prefix)| Ipv4Net::new(v4(addr), prefix))
                .transpose()
                .map_err(|error| corrupt(&record.name, error))?,
            cidr_v6: record
                .cidr_v6
                .map(|(addr, prefix)| Ipv6Net::new(v6(addr), prefix))
                .transpose()
                .map_err(|error| corrupt(&record.name, error))?,
            gateway_v4: record.gateway_v4.map(v4),
            gateway_v6: record.gateway_v6.map(v6),
            exclude_ips: record.exclude_ips,
            strategy: if record.sequential {
                Strategy::Sequential
            } else {
                Strategy::Random
            },
            logical_switch: record.logical_switch,
            name: record.name,
        })
    }
}

impl From<&Vip> for VipRecord {
    fn from(vip: &Vip) -> VipRecord {
        if let Some(pending) = &vip.pending {
            return VipRecord::V2(VipV2 {
                name: vip.spec.name.clone(),
                namespace: vip.spec.namespace.clone(),
                subnet: vip.spec.subnet.clone(),
                switch_lb_vip: vip.spec.vip_type == VipType::SwitchLbVip,
                requested_v4: vip.spec.v4ip.map(|ip| ip.octets()),
                requested_v6: vip.spec.v6ip.map(|ip| ip.octets()),
                requested_mac: vip.spec.mac.map(|mac| mac.octets()),
                selector: vip.spec.selector.clone(),
                allocation: None,
                holder: vip.holder.as_ref().map(|pod| (pod.namespace.clone(), pod.name.clone())),
                pending: Some((pending.reason.clone(), pending.message.clone())),
            });
        }
        VipRecord::V1(VipV1 {
            name: vip.spec.name.clone(),
            namespace: vip.spec.namespace.clone(),
            subnet: vip.spec.subnet.clone(),
            switch_lb_vip: vip.spec.vip_type == VipType::SwitchLbVip,
            requested_v4: vip.spec.v4ip.map(|ip| ip.octets()),
            requested_v6: vip.spec.v6ip.map(|ip| ip.octets()),
            requested_mac: vip.spec.mac.map(|mac| mac.octets()),
            selector: vip.spec.selector.clone(),
            v4ip: vip.v4ip.map(|ip| ip.octets()),
            v6ip: vip.v6ip.map(|ip| ip.octets()),
            mac: vip.mac.octets(),
            holder: vip.holder.as_ref().map(|pod| (pod.namespace.clone(), pod.name.clone())),
        })
    }
}

impl From<VipRecord> for Vip {
    fn from(record: VipRecord) -> Vip {
        match record {
            // A V1 record is a V2 one with its addresses.
            VipRecord::V1(record) => vip_from_v2(VipV2 {
                allocation: Some(VipAllocationV2 {
                    v4ip: record.v4ip,
                    v6ip: record.v6ip,
                    mac: record.mac,
                }),
                name: record.name,
                namespace: record.namespace,
                subnet: record.subnet,
                switch_lb_vip: record.switch_lb_vip,
                requested_v4: record.requested_v4,
                requested_v6: record.requested_v6,
                requested_mac: record.requested_mac,
                selector: record.selector,
                holder: record.holder,
                pending: None,
            }),
            VipRecord::V2(record) => vip_from_v2(record),
        }
    }
}

fn vip_from_v2(record: VipV2) -> Vip {
    let (v4ip, v6ip, mac) = match &record.allocation {
        Some(allocation) => (
            allocation.v4ip.map(v4),
            allocation.v6ip.map(v6),
            MacAddr::from_octets(allocation.mac),
        ),
        None => (None, None, MacAddr::from_octets([0; 6])),
    };
    // Without an allocation a VIP is pending, whatever the record says.
    let pending = match (record.allocation, record.pending) {
        (Some(_), _) => None,
        (None, Some((reason, message))) => Some(Pending { reason, message }),
        (None, None) => Some(Pending::subnet_not_found(&record.subnet)),
    };
    Vip {
        spec: VipSpec {
            name: record.name,
            namespace: record.namespace,
            subnet: record.subnet,
            vip_type: if record.switch_lb_vip {
                VipType::SwitchLbVip
            } else {
                VipType::Reserved
            },
            v4ip: record.requested_v4.map(v4),
            v6ip: record.requested_v6.map(v6),
            mac: record.requested_mac.map(MacAddr::from_octets),
            selector: record.selector,
        },
        v4ip,
        v6ip,
        mac,
        nb_mac: None,
        holder: record.holder.map(|(namespace, name)| PodRef { namespace, name }),
        // Status is observed state: the reconciler writes it again after a restart.
        conditions: Vec::new(),
        pending,
    }
}

impl From<&Pod> for PodRecord {
    fn from(pod: &Pod) -> PodRecord {
        PodRecord::V2(PodV2 {
            owner_name: pod.spec.owner_name.clone(),
            namespace: pod.spec.namespace.clone(),
            name: pod.spec.name.clone(),
            labels: pod.spec.labels.clone(),
            annotations: pod.spec.annotations.clone(),
            owner_kind: match pod.spec.owner_kind {
                OwnerKind::Other => 0,
                OwnerKind::StatefulSet => 1,
                OwnerKind::VirtualMachine => 2,
            },
            nic_specs: pod
                .spec
                .nics
                .iter()
                .map(|nic| NicSpecV2 {
                    subnet: nic.subnet.clone(),
                    interface: nic.interface.clone(),
                    v4ip: nic.v4ip.map(|ip| ip.octets()),
                    v6ip: nic.v6ip.map(|ip| ip.octets()),
                    mac: nic.mac.map(|mac| mac.octets()),
                    attachment: nic.attachment.as_ref().map(|attachment| {
                        (
                            attachment.network.clone(),
                            attachment.container_id.clone(),
                            attachment.node.clone(),
                        )
                    }),
                })
                .collect(),
            nics: pod
                .nics
                .iter()
                .map(|nic| PodNicV1 {
                    interface: nic.interface.clone(),
                    subnet: nic.subnet.clone(),
                    port_name: nic.port_name.clone(),
                    v4ip: nic.v4ip.map(|ip| ip.octets()),
                    v6ip: nic.v6ip.map(|ip| ip.octets()),
                    mac: nic.mac.octets(),
                    vip: nic.vip.clone(),
                })
                .collect(),
            bound: pod.bound,
        })
    }
}

impl TryFrom<PodRecord> for Pod {
    type Error = StoreError;
    fn try_from(record: PodRecord) -> Result<Pod, StoreError> {
        let record = match record {
            PodRecord::V1(record) => PodV2 {
                namespace: record.namespace,
                name: record.name,
                labels: record.labels,
                annotations: record.annotations,
                owner_kind: record.owner_kind,
                nic_specs: record
                    .nic_specs
                    .into_iter()
                    .map(|(subnet, interface)| NicSpecV2 {
                        subnet,
                        interface,
                        v4ip: None,
                        v6ip: None,
                        mac: None,
                        attachment: None,
                    })
                    .collect(),
                nics: record.nics,
                bound: record.bound,
                owner_name: String::new(),
            },
            PodRecord::V2(record) => record,
        };
        let owner_kind = match record.owner_kind {
            0 => OwnerKind::Other,
            1 => OwnerKind::StatefulSet,
            2 => OwnerKind::VirtualMachine,
            other => return Err(corrupt(&record.name, format!("unknown owner kind {other}"))),
        };
        Ok(Pod {
            spec: PodSpec {
                namespace: record.namespace,
                name: record.name,
                labels: record.labels,
                annotations: record.annotations,
                owner_kind,
                owner_name: record.owner_name,
                nics: record
                    .nic_specs
                    .into_iter()
                    .map(|nic| NicSpec {
                        subnet: nic.subnet,
                        interface: nic.interface,
                        v4ip: nic.v4ip.map(v4),
                        v6ip: nic.v6ip.map(v6),
                        mac: nic.mac.map(MacAddr::from_octets),
                        attachment: nic.attachment.map(|(network, container_id, node)| Attachment {
                            network,
                            container_id,
                            node,
                        }),
                    })
                    .collect(),
            },
            nics: record
                .nics
                .into_iter()
                .map(|nic| PodNic {
                    interface: nic.interface,
                    subnet: nic.subnet,
                    port_name: nic.port_name,
                    v4ip: nic.v4ip.map(v4),
                    v6ip: nic.v6ip.map(v6),
                    mac: MacAddr::from_octets(nic.mac),
                    vip: nic.vip,
                })
                .collect(),
            bound: record.bound,
        })
    }
}

impl From<&SwitchLbRule> for SwitchLbRuleRecord {
    fn from(rule: &SwitchLbRule) -> SwitchLbRuleRecord {
        SwitchLbRuleRecord::V1(SwitchLbRuleV1 {
            name: rule.name.clone(),
            vip: rule.vip.clone(),
            namespace: rule.namespace.clone(),
            selector: rule.selector.clone(),
            endpoints: rule.endpoints.iter().map(IpAddr::to_string).collect(),
            ports: rule
                .ports
                .iter()
                .map(|port| LbPortV1 {
                    name: port.name.clone(),
                    port: port.port,
                    target_port: port.target_port,
                    protocol: match port.protocol {
                        Protocol::Tcp => 0,
                        Protocol::Udp => 1,
                        Protocol::Sctp => 2,
                    },
                })
                .collect(),
            session_affinity_timeout: rule.session_affinity_timeout,
            health_check: rule.health_check,
        })
    }
}

impl TryFrom<SwitchLbRuleRecord> for SwitchLbRule {
    type Error = StoreError;
    fn try_from(record: SwitchLbRuleRecord) -> Result<SwitchLbRule, StoreError> {
        let SwitchLbRuleRecord::V1(record) = record;
        let endpoints = record
            .endpoints
            .iter()
            .map(|text| text.parse::<IpAddr>().map_err(|error| corrupt(&record.name, error)))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = record
            .ports
            .into_iter()
            .map(|port| {
                let protocol = match port.protocol {
                    0 => Protocol::Tcp,
                    1 => Protocol::Udp,
                    2 => Protocol::Sctp,
                    other => return Err(corrupt(&record.name, format!("unknown protocol {other}"))),
                };
                Ok(LbPort {
                    name: port.name,
                    port: port.port,
                    target_port: port.target_port,
                    protocol,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(SwitchLbRule {
            name: record.name,
            vip: record.vip,
            namespace: record.namespace,
            selector: record.selector,
            endpoints,
            ports,
            session_affinity_timeout: record.session_affinity_timeout,
            health_check: record.health_check,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &VipRecord) -> VipRecord {
        let bytes = bincode::serde::encode_to_vec(record, bincode::config::standard()).unwrap();
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .unwrap()
            .0
    }

    /// A pending VIP (no addresses) is a V2 record and reads back pending, with its request;
    /// an allocated VIP is still written as V1, as before.
    #[test]
    fn a_pending_vip_is_a_v2_record_and_an_allocated_one_stays_v1() {
        let mut vip = Vip {
            spec: VipSpec {
                name: "early".into(),
                namespace: String::new(),
                subnet: "later".into(),
                vip_type: VipType::SwitchLbVip,
                v4ip: Some(Ipv4Addr::new(10, 16, 0, 9)),
                v6ip: None,
                mac: Some(MacAddr::from_octets([2, 0, 0, 0, 0, 9])),
                selector: BTreeMap::new(),
            },
            v4ip: None,
            v6ip: None,
            mac: MacAddr::from_octets([0; 6]),
            holder: None,
            conditions: Vec::new(),
            nb_mac: None,
            pending: Some(Pending::subnet_not_found("later")),
        };
        let record = VipRecord::from(&vip);
        assert!(matches!(record, VipRecord::V2(_)));
        assert_eq!(Vip::from(round_trip(&record)), vip);
        vip.pending = None;
        vip.v4ip = vip.spec.v4ip;
        vip.mac = MacAddr::from_octets([2, 0, 0, 0, 0, 9]);
        let record = VipRecord::from(&vip);
        assert!(matches!(record, VipRecord::V1(_)));
        assert_eq!(Vip::from(round_trip(&record)), vip);
    }

    /// Pods stored before NIC requests carried static addresses and attachments still read.
    #[test]
    fn a_v1_pod_record_reads_as_a_pod_without_statics_or_attachments() {
        let v1 = PodRecord::V1(PodV1 {
            namespace: "default".into(),
            name: "web-0".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            owner_kind: 1,
            nic_specs: vec![("ovn-default".into(), "eth0".into())],
            nics: vec![PodNicV1 {
                interface: "eth0".into(),
                subnet: "ovn-default".into(),
                port_name: "web-0.default".into(),
                v4ip: Some([10, 16, 0, 5]),
                v6ip: None,
                mac: [2, 0, 0, 0, 0, 5],
                vip: None,
            }],
            bound: true,
        });
        let bytes = bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap();
        let (decoded, _): (PodRecord, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        let pod = Pod::try_from(decoded).unwrap();
        assert_eq!(pod.spec.nics[0].interface, "eth0");
        assert_eq!(pod.spec.nics[0].attachment, None);
        assert_eq!(pod.spec.nics[0].v4ip, None);
        assert_eq!(pod.nics[0].v4ip, Some(Ipv4Addr::new(10, 16, 0, 5)));
        // Written back, it is V2 and round-trips with what V2 adds.
        let mut pod = pod;
        pod.spec.nics[0].attachment = Some(Attachment {
            network: "ovnnet".into(),
            container_id: "c1".into(),
            node: "node-1".into(),
        });
        pod.spec.nics[0].mac = Some(MacAddr::from_octets([2, 0, 0, 0, 0, 5]));
        let record = PodRecord::from(&pod);
        assert!(matches!(record, PodRecord::V2(_)));
        assert_eq!(Pod::try_from(record).unwrap(), pod);
    }
}
