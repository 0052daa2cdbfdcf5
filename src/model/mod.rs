//! Domain types: subnets, VIPs, pods and switch-LB rules as the daemon reasons about them. They
//! are neither protobuf types (`api` converts) nor storage encodings (`store` converts).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

pub use crate::ipam::{MacAddr, Strategy};

/// Pod annotation listing the AAP VIPs a pod may carry: `vip-aap,vip-aap2`.
pub const ANNOTATION_AAPS: &str = "ovn.kubernetes.io/aaps";
/// Pod annotation naming the VIP whose address and MAC the pod takes.
pub const ANNOTATION_VIP: &str = "ovn.kubernetes.io/vip";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub name: String,
    /// The OVN logical switch; defaults to the subnet's name.
    pub logical_switch: String,
    pub cidr_v4: Option<Ipv4Net>,
    pub cidr_v6: Option<Ipv6Net>,
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    /// Kube-OVN `excludeIps` syntax, as given.
    pub exclude_ips: Vec<String>,
    pub strategy: Strategy,
    /// The VPC (Kube-OVN's name for a logical router's routing domain) the subnet belongs to;
    /// [`DEFAULT_VPC`] unless given. CIDRs must not overlap within one VPC.
    pub vpc: String,
}

/// Kube-OVN's default VPC, shared by every subnet that names none.
pub const DEFAULT_VPC: &str = "ovn-cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VipType {
    /// Kube-OVN's `type: ""`: a reserved address, or an AAP VIP when a namespace is set.
    Reserved,
    /// `switch_lb_vip`: the frontend of a load balancer on the subnet's switch.
    SwitchLbVip,
}

impl VipType {
    pub fn as_str(self) -> &'static str {
        match self {
            VipType::Reserved => "",
            VipType::SwitchLbVip => "switch_lb_vip",
        }
    }
}

/// What a user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    pub name: String,
    /// Set for AAP VIPs: only pods of this namespace may carry the address.
    pub namespace: String,
    pub subnet: String,
    pub vip_type: VipType,
    pub v4ip: Option<Ipv4Addr>,
    pub v6ip: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A status condition (Kubernetes' shape). Type, reason and most messages are fixed texts,
/// borrowed rather than copied into each of 100,000 VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub condition_type: Cow<'static, str>,
    pub status: bool,
    pub reason: Cow<'static, str>,
    pub message: Cow<'static, str>,
    /// Unix milliseconds.
    pub last_transition_ms: i64,
}

/// A VIP with what was allocated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub spec: VipSpec,
    pub v4ip: Option<Ipv4Addr>,
    pub v6ip: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// The pod that uses this VIP as its fixed address (scenario 3).
    pub holder: Option<PodRef>,
    pub conditions: Vec<Condition>,
    /// Observed, not persisted: the MAC that answers ARP/ND for this VIP in NB when it is not
    /// `mac` (a switch_lb_vip is answered by the subnet's router port). Status reports it.
    pub nb_mac: Option<MacAddr>,
    /// Set while the VIP holds no addresses (a reference before its target, the Kubernetes
    /// way): its subnet does not exist yet, or the subnet cannot give what the spec requests.
    /// `v4ip`, `v6ip` and `mac` are then meaningless (`None`, `None`, all zeros); the VIP has no
    /// NB rows and is Ready=False with this reason until the registry allocates it.
    pub pending: Option<Pending>,
}

/// Why a VIP holds no addresses yet: the Ready condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// `SubnetNotFound`, `AddressNotInSubnet`, `AddressExcluded`, `AddressTaken`, `SubnetFull`,
    /// `FamilyNotInSubnet`, `InvalidRequest`.
    pub reason: String,
    pub message: String,
}

impl Pending {
    pub fn subnet_not_found(subnet: &str) -> Pending {
        Pending {
            reason: "SubnetNotFound".into(),
            message: format!("subnet {subnet} does not exist (yet): the VIP gets its addresses when it is created"),
        }
    }
}

impl Vip {
    pub fn is_aap(&self) -> bool {
        self.spec.vip_type == VipType::Reserved && !self.spec.namespace.is_empty()
    }

    /// Whether the VIP holds its addresses and MAC (it is not [`Vip::pending`]).
    pub fn is_allocated(&self) -> bool {
        self.pending.is_none()
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.v4ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6ip.map(IpAddr::V6))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Other,
    StatefulSet,
    VirtualMachine,
}

impl OwnerKind {
    /// StatefulSet pods and VMs keep their addresses across re-creation.
    pub fn keeps_addresses(self) -> bool {
        matches!(self, OwnerKind::StatefulSet | OwnerKind::VirtualMachine)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicSpec {
    pub subnet: String,
    pub interface: String,
    /// Addresses and MAC the runtime asked for (static requests); `None`: the subnet chooses.
    pub v4ip: Option<Ipv4Addr>,
    pub v6ip: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    /// The CNI attachment this NIC serves, when a CNI runtime bound it.
    pub attachment: Option<Attachment>,
}

/// A CNI attachment: CNI's key for it is (container id, network name, interface); the
/// interface is the NIC's.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    /// The runtime's network name (`name` of the CNI configuration).
    pub network: String,
    /// The container (sandbox) id, `CNI_CONTAINERID`.
    pub container_id: String,
    /// The node the container runs on (the plugin's host name); empty when not said.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner_kind: OwnerKind,
    /// The owner's name (the VirtualMachine's for a KubeVirt launcher pod); may be empty. A
    /// VM's launcher pod gets a new name every time, so what a VM keeps is keyed by
    /// (owner kind, owner name), not by the pod's name.
    pub owner_name: String,
    pub nics: Vec<NicSpec>,
}

/// One bound NIC and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNic {
    pub interface: String,
    pub subnet: String,
    /// `<pod>.<namespace>` for the first NIC, `<pod>.<namespace>.<interface>` for the others.
    pub port_name: String,
    pub v4ip: Option<Ipv4Addr>,
    pub v6ip: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// The VIP whose address this NIC uses (scenario 3).
    pub vip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub spec: PodSpec,
    pub nics: Vec<PodNic>,
    /// False after an Unbind that kept the addresses (StatefulSet, VM).
    pub bound: bool,
}

impl Pod {
    pub fn key(&self) -> PodRef {
        PodRef {
            namespace: self.spec.namespace.clone(),
            name: self.spec.name.clone(),
        }
    }
}

/// The OVN logical port name of a pod's NIC.
pub fn port_name(pod: &str, namespace: &str, interface: &str, first: bool) -> String {
    if first {
        format!("{pod}.{namespace}")
    } else {
        format!("{pod}.{namespace}.{interface}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbPort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchLbRule {
    pub name: String,
    /// A VIP name, or an address.
    pub vip: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub endpoints: Vec<IpAddr>,
    pub ports: Vec<LbPort>,
    /// ClientIP affinity timeout in seconds; `None` for no affinity.
    pub session_affinity_timeout: Option<u32>,
    pub health_check: bool,
}

impl SwitchLbRule {
    /// Why the rule waits for the VIP it names, as the Ready condition's reason and message:
    /// `VipNotFound` when `vip` (the VIP of that name, looked up by the caller) does not exist,
    /// `VipNotReady` while it holds no addresses ([`Vip::pending`]); `None` when the rule's
    /// frontend is an address or its VIP is allocated. A reference before its target, the
    /// Kubernetes way: the rule becomes ready when the VIP has addresses.
    pub fn waits_for_vip(&self, vip: Option<&Vip>) -> Option<(&'static str, String)> {
        if self.vip.parse::<IpAddr>().is_ok() {
            return None;
        }
        match vip {
            None => Some((
                "VipNotFound",
                format!(
                    "vip {} does not exist (yet): the rule becomes ready when it does",
                    self.vip
                ),
            )),
            Some(vip) if !vip.is_allocated() => {
                let why = vip
                    .pending
                    .as_ref()
                    .map(|pending| pending.message.as_str())
                    .unwrap_or_default();
                Some((
                    "VipNotReady",
                    format!(
                        "vip {} has no addresses yet ({why}): the rule becomes ready when it has",
                        vip.spec.name
                    ),
                ))
            }
            Some(_) => None,
        }
    }
}

/// Whether `labels` satisfy every `key: value` of `selector` (an empty selector matches all).
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// The VIP names listed in a pod's `ovn.kubernetes.io/aaps` annotation.
pub fn aap_vips(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(ANNOTATION_AAPS)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The NIC by which `pod` may carry the AAP VIP `vip`, if it is eligible: bound, same namespace,
/// labels matching the VIP's selector, the VIP listed in `ovn.kubernetes.io/aaps`, with a NIC in
/// the VIP's subnet. The selector decides both its parents and their port security.
pub fn eligible_nic<'a>(vip: &Vip, pod: &'a Pod) -> Option<&'a PodNic> {
    if !vip.is_aap()
        || !pod.bound
        || pod.spec.namespace != vip.spec.namespace
        || !selector_matches(&vip.spec.selector, &pod.spec.labels)
        || !aap_vips(&pod.spec.annotations).contains(&vip.spec.name)
    {
        return None;
    }
    pod.nics.iter().find(|nic| nic.subnet == vip.spec.subnet)
}

/// The ports of the pods eligible to carry an AAP VIP, sorted. `pods` may be every pod, or only
/// those whose annotation names the VIP (the others are never eligible).
pub fn aap_parents<'a>(vip: &Vip, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<String> {
    let mut parents: Vec<String> = pods
        .into_iter()
        .filter_map(|pod| eligible_nic(vip, pod).map(|nic| nic.port_name.clone()))
        .collect();
    parents.sort();
    parents.dedup();
    parents
}
