//! ADD, DEL and CHECK: the daemon's `PodService` for addresses, [`Dataplane`] for the
//! interfaces. ADD rolls back whatever it made when a later step fails.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use tonic::Code;

use super::config::{tls_key, Invocation, NetConf, PodIdentity, StaticRequest};
use super::dataplane::{host_veth_name, link_exists, Dataplane};
use super::types::{code, AddResult, CniError, Dns, Interface, IpConfig, Route};
use crate::api::proto::v1 as pb;
use crate::client::{ClientError, Daemons};
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;

/// A connection to one of the configured daemons (see [`crate::client`]), driven by a
/// current-thread runtime: the plugin is a short-lived process that makes a handful of calls one
/// after the other. Every call moves to another daemon on `UNAVAILABLE`.
pub struct Daemon {
    runtime: tokio::runtime::Runtime,
    daemons: Daemons,
}

impl Daemon {
    /// Connects to the first configured daemon that answers. A bad TLS file is code 7 naming its
    /// key; no daemon answering is code 11 (try again later).
    pub fn connect(conf: &NetConf) -> Result<Daemon, CniError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                CniError::new(code::IO_FAILURE, "cannot start the async runtime").with_details(error.to_string())
            })?;
        let daemons = runtime
            .block_on(Daemons::connect(conf.client_settings()))
            .map_err(|error| match error {
                ClientError::Setting { setting, message } => CniError::new(
                    code::INVALID_CONFIG,
                    format!("invalid network configuration: {:?}: {message}", tls_key(setting)),
                ),
                ClientError::Unreachable { .. } => {
                    let list: Vec<String> = conf.daemons.iter().map(ToString::to_string).collect();
                    CniError::new(
                        code::TRY_AGAIN_LATER,
                        format!(
                            "ovn-vipd is unreachable at {} (\"{}\")",
                            list.join(","),
                            if conf.server.is_some() {
                                "server"
                            } else {
                                "serverSocket"
                            }
                        ),
                    )
                    .with_details(error.to_string())
                }
            })?;
        Ok(Daemon { runtime, daemons })
    }

    pub fn bind(&mut self, request: pb::BindPodRequest) -> Result<pb::Pod, CniError> {
        let what = format!("binding pod {}/{}", request.namespace, request.name);
        self.runtime
            .block_on(self.daemons.call(request, |channel, request| async move {
                PodServiceClient::new(channel).bind_pod(request).await
            }))
            .map_err(|status| refused(&what, &status))
    }

    /// Unbinds one interface of the pod (the pod goes with its last); `false` when the daemon
    /// did not know it.
    pub fn unbind(&mut self, pod: &PodIdentity, interface: &str) -> Result<bool, CniError> {
        let request = pb::UnbindPodRequest {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            owner_gone: false,
            interface: interface.to_string(),
            revision: 0,
        };
        self.runtime
            .block_on(self.daemons.call(request, |channel, request| async move {
                PodServiceClient::new(channel).unbind_pod(request).await
            }))
            .map(|response| response.found)
            .map_err(|status| {
                refused(
                    &format!("unbinding {interface} of pod {}/{}", pod.namespace, pod.name),
                    &status,
                )
            })
    }

    /// Every pod the daemon has, read a page at a time.
    pub fn list(&mut self) -> Result<Vec<pb::Pod>, CniError> {
        let mut pods = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListPodsRequest {
                page_token,
                ..Default::default()
            };
            let page = self
                .runtime
                .block_on(self.daemons.call(request, |channel, request| async move {
                    PodServiceClient::new(channel).list_pods(request).await
                }))
                .map_err(|status| refused("listing pods", &status))?;
            pods.extend(page.pods);
            if page.next_page_token.is_empty() {
                return Ok(pods);
            }
            page_token = page.next_page_token;
        }
    }

    /// Whether the daemon has the subnet.
    pub fn has_subnet(&mut self, name: &str) -> Result<bool, CniError> {
        let request = pb::GetSubnetRequest { name: name.to_string() };
        let answer = self
            .runtime
            .block_on(self.daemons.call(request, |channel, request| async move {
                SubnetServiceClient::new(channel).get_subnet(request).await
            }));
        match answer {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(refused(&format!("reading subnet {name}"), &status)),
        }
    }

    /// The pod as the daemon has it, or `None` when it does not know it.
    pub fn get(&mut self, pod: &PodIdentity) -> Result<Option<pb::Pod>, CniError> {
        let request = pb::GetPodRequest {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        };
        let answer = self
            .runtime
            .block_on(self.daemons.call(request, |channel, request| async move {
                PodServiceClient::new(channel).get_pod(request).await
            }));
        match answer {
            Ok(pod) => Ok(Some(pod)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(refused(&format!("reading pod {}/{}", pod.namespace, pod.name), &status)),
        }
    }
}

/// A gRPC error as a CNI error: unavailable is "try again later", and so is a reference to an
/// object that does not exist yet (FAILED_PRECONDITION with `google.rpc.ErrorInfo` reason
/// `REFERENCE_NOT_FOUND`: a subnet or VIP a controller may still create); everything else is the
/// daemon's refusal with its message (e.g. "vip x is in use by pod default/y").
fn refused(what: &str, status: &tonic::Status) -> CniError {
    use tonic_types::StatusExt;
    let not_yet = status.code() == Code::FailedPrecondition
        && status
            .get_details_error_info()
            .is_some_and(|info| info.domain == crate::api::error::ERROR_DOMAIN && info.reason == "REFERENCE_NOT_FOUND");
    let code = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => code::TRY_AGAIN_LATER,
        _ if not_yet => code::TRY_AGAIN_LATER,
        _ => code::DAEMON_REFUSED,
    };
    let verb = if code == code::TRY_AGAIN_LATER && !not_yet {
        "did not answer"
    } else {
        "refused"
    };
    CniError::new(code, format!("ovn-vipd {verb} {what}: {}", status.message()))
        .with_details(format!("gRPC status {:?}", status.code()))
}

fn dataplane(conf: &NetConf) -> Dataplane {
    Dataplane {
        bridge: conf.bridge.clone(),
        ovsdb: conf.ovsdb.clone(),
        mtu: conf.mtu,
    }
}

fn owner_kind(kind: &str) -> pb::OwnerKind {
    match kind {
        "StatefulSet" => pb::OwnerKind::StatefulSet,
        "VirtualMachine" | "VirtualMachineInstance" => pb::OwnerKind::VirtualMachine,
        _ => pb::OwnerKind::Other,
    }
}

/// The BindPod request for this attachment: one NIC, `CNI_IFNAME` in the configured subnet,
/// with the addresses the runtime asks for and the attachment (network, container id).
pub fn bind_request(
    conf: &NetConf,
    invocation: &Invocation,
    pod: &PodIdentity,
    statics: &StaticRequest,
) -> pb::BindPodRequest {
    let args = &conf.args.cni;
    pb::BindPodRequest {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        labels: args.labels.clone(),
        annotations: args.annotations.clone(),
        owner_kind: owner_kind(&args.owner_kind) as i32,
        nics: vec![pb::NicRequest {
            subnet: args.subnet(conf).to_string(),
            interface: invocation.ifname.clone(),
            ips: statics.ips.iter().map(ToString::to_string).collect(),
            mac: statics.mac.clone().unwrap_or_default(),
            network: conf.name.clone(),
            container_id: invocation.container_id.clone(),
            node: node_name(),
        }],
        ..Default::default()
    }
}

/// This node's name as attachments record it: the kernel's host name ("" when unreadable, which
/// GC then treats as a node of its own).
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

fn netns_must_exist(invocation: &Invocation) -> Result<(), CniError> {
    if Path::new(&invocation.netns).exists() {
        Ok(())
    } else {
        Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", invocation.netns),
        ))
    }
}

/// ADD: bind, then build the interfaces; a failure after the bind removes the interfaces and
/// releases the binding before it is reported.
pub fn add(conf: &NetConf, invocation: &Invocation) -> Result<AddResult, CniError> {
    let pod = PodIdentity::of(invocation, &conf.pod_namespace)?;
    let statics = StaticRequest::of(conf, invocation)?;
    netns_must_exist(invocation)?;
    let mut daemon = Daemon::connect(conf)?;
    let bound = daemon.bind(bind_request(conf, invocation, &pod, &statics))?;
    let dataplane = dataplane(conf);
    let host = host_veth_name(&invocation.container_id, &invocation.ifname);
    match build_interfaces(conf, invocation, &dataplane, &bound, &host) {
        Ok(result) => Ok(result),
        Err(error) => {
            // Best effort: the first error is what the runtime must see.
            let _ = dataplane.detach(&host);
            let _ = dataplane.delete_veth(&host);
            let _ = dataplane.delete_container_link(&invocation.netns, &invocation.ifname);
            let _ = release_binding(&mut daemon, &dataplane, &pod, &invocation.ifname, &host);
            Err(error)
        }
    }
}

/// Which bound NIC this attachment is, with its addresses checked.
struct Nic<'a> {
    bound: &'a pb::BoundNic,
    addresses: Vec<IpNet>,
    gateways: Vec<IpAddr>,
}

fn nic<'a>(pod: &'a pb::Pod, ifname: &str) -> Result<Nic<'a>, CniError> {
    let invalid = |what: String| CniError::new(code::DAEMON_REFUSED, what);
    let bound = pod
        .nics
        .iter()
        .find(|nic| nic.interface == ifname)
        .ok_or_else(|| invalid(format!("ovn-vipd's answer has no interface {ifname}")))?;
    let addresses = bound
        .addresses
        .iter()
        .map(|address| {
            address
                .parse::<IpNet>()
                .map_err(|_| invalid(format!("ovn-vipd answered an invalid address {address:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gateways = bound
        .gateways
        .iter()
        .map(|gateway| {
            gateway
                .parse::<IpAddr>()
                .map_err(|_| invalid(format!("ovn-vipd answered an invalid gateway {gateway:?}")))
        })
        // Only the families the interface has an address of.
        .filter(|gateway| match gateway {
            Ok(gateway) => addresses
                .iter()
                .any(|address| address.addr().is_ipv4() == gateway.is_ipv4()),
            Err(_) => true,
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Nic {
        bound,
        addresses,
        gateways,
    })
}

fn build_interfaces(
    conf: &NetConf,
    invocation: &Invocation,
    dataplane: &Dataplane,
    pod: &pb::Pod,
    host: &str,
) -> Result<AddResult, CniError> {
    let nic = nic(pod, &invocation.ifname)?;
    dataplane.create_veth(host, &invocation.netns, &invocation.ifname)?;
    dataplane.configure_container(
        &invocation.netns,
        &invocation.ifname,
        &nic.bound.mac,
        &nic.addresses,
        &nic.gateways,
    )?;
    dataplane.attach(
        host,
        &nic.bound.port_name,
        &invocation.container_id,
        &conf.name,
        &invocation.ifname,
    )?;
    dataplane.wait_ovn_installed(host, conf.ovn_installed_timeout())?;
    let host_mac = super::dataplane::link_mac(host)?;
    let gateway_of = |address: &IpNet| {
        nic.gateways
            .iter()
            .find(|gateway| gateway.is_ipv4() == address.addr().is_ipv4())
            .map(ToString::to_string)
    };
    Ok(AddResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: host.to_string(),
                mac: host_mac,
                sandbox: None,
            },
            Interface {
                name: invocation.ifname.clone(),
                mac: nic.bound.mac.clone(),
                sandbox: Some(invocation.netns.clone()),
            },
        ],
        ips: nic
            .addresses
            .iter()
            .map(|address| IpConfig {
                version: conf
                    .is_pre_1_0()
                    .then_some(if address.addr().is_ipv4() { "4" } else { "6" }),
                address: address.to_string(),
                gateway: gateway_of(address),
                interface: 1,
            })
            .collect(),
        routes: nic
            .gateways
            .iter()
            .map(|gateway| Route {
                dst: if gateway.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.to_string(),
                gw: Some(gateway.to_string()),
            })
            .collect(),
        dns: Dns {},
    })
}

/// Unbinds the pod, unless another sandbox of the same pod has taken its port over since (a
/// runtime may ADD the new sandbox before it DELs the old one): its interface then carries the
/// same `iface-id` and the binding is still in use.
fn release_binding(
    daemon: &mut Daemon,
    dataplane: &Dataplane,
    pod: &PodIdentity,
    ifname: &str,
    host: &str,
) -> Result<(), CniError> {
    let Some(bound) = daemon.get(pod)? else {
        return Ok(());
    };
    let Some(nic) = bound.nics.iter().find(|nic| nic.interface == ifname) else {
        return Ok(());
    };
    let others: Vec<String> = dataplane
        .interfaces_of_port(&nic.port_name)?
        .into_iter()
        .filter(|name| name != host)
        .collect();
    if others.is_empty() {
        daemon.unbind(pod, ifname)?;
    }
    Ok(())
}

/// DEL: removes the interfaces (each step succeeds when its object is gone), then unbinds.
pub fn del(conf: &NetConf, invocation: &Invocation) -> Result<(), CniError> {
    let pod = PodIdentity::of(invocation, &conf.pod_namespace)?;
    let dataplane = dataplane(conf);
    let host = host_veth_name(&invocation.container_id, &invocation.ifname);
    dataplane.detach(&host)?;
    dataplane.delete_veth(&host)?;
    dataplane.delete_container_link(&invocation.netns, &invocation.ifname)?;
    let mut daemon = Daemon::connect(conf)?;
    release_binding(&mut daemon, &dataplane, &pod, &invocation.ifname, &host)
}

/// CHECK: the pod is bound, and the interface and the bridge port are as ADD left them.
pub fn check(conf: &NetConf, invocation: &Invocation) -> Result<(), CniError> {
    if conf.cni_version.starts_with("0.3.") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK needs cniVersion 0.4.0 or later, not {}", conf.cni_version),
        ));
    }
    let pod = PodIdentity::of(invocation, &conf.pod_namespace)?;
    netns_must_exist(invocation)?;
    let failed = |what: String| CniError::new(code::CHECK_FAILED, what);
    let mut daemon = Daemon::connect(conf)?;
    let bound = daemon
        .get(&pod)?
        .ok_or_else(|| failed(format!("ovn-vipd has no pod {}/{}", pod.namespace, pod.name)))?;
    if !bound.bound {
        return Err(failed(format!("pod {}/{} is not bound", pod.namespace, pod.name)));
    }
    let nic = nic(&bound, &invocation.ifname)?;
    let dataplane = dataplane(conf);
    let link = dataplane
        .container_link(&invocation.netns, &invocation.ifname)?
        .ok_or_else(|| failed(format!("{} does not exist in {}", invocation.ifname, invocation.netns)))?;
    if !link.mac.eq_ignore_ascii_case(&nic.bound.mac) {
        return Err(failed(format!(
            "{} has MAC {}, not {}",
            invocation.ifname, link.mac, nic.bound.mac
        )));
    }
    for address in &nic.addresses {
        if !link.addresses.contains(address) {
            return Err(failed(format!("{} lacks address {address}", invocation.ifname)));
        }
    }
    let host = host_veth_name(&invocation.container_id, &invocation.ifname);
    if !link_exists(&host)? {
        return Err(failed(format!("the host end {host} does not exist")));
    }
    match dataplane.iface_id(&host)? {
        Some(port) if port == nic.bound.port_name => Ok(()),
        Some(port) => Err(failed(format!(
            "{host} is attached as {port}, not {}",
            nic.bound.port_name
        ))),
        None => Err(failed(format!("{host} is not a port of {}", conf.bridge))),
    }
}

fn needs_1_1(conf: &NetConf, command: &str) -> Result<(), CniError> {
    if conf.has_gc_and_status() {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("{command} needs cniVersion 1.1.0 or later, not {}", conf.cni_version),
        ))
    }
}

/// GC (CNI 1.1.0): every NIC bound for this network (its name) on this node (see [`node_name`];
/// the runtime lists its own node's attachments only) whose attachment (container id,
/// interface) is not in `cni.dev/valid-attachments` is unbound, and its host veth and bridge
/// port are removed; so are bridge ports of this network no binding names (a DEL that never
/// ran). The container's end went with its namespace. Each stale attachment is tried; the
/// first failure is reported (code 11 while the daemon is unreachable: the runtime tries again).
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    needs_1_1(conf, "GC")?;
    let valid: std::collections::HashSet<(&str, &str)> = conf
        .valid_attachments
        .iter()
        .map(|attachment| (attachment.container_id.as_str(), attachment.ifname.as_str()))
        .collect();
    let dataplane = dataplane(conf);
    let node = node_name();
    let mut daemon = Daemon::connect(conf)?;
    let mut first_error = None;
    for pod in daemon.list()? {
        let identity = PodIdentity {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        };
        for nic in &pod.nics {
            let stale = nic.network == conf.name
                && nic.node == node
                && !nic.container_id.is_empty()
                && !valid.contains(&(nic.container_id.as_str(), nic.interface.as_str()));
            if !stale {
                continue;
            }
            let host = host_veth_name(&nic.container_id, &nic.interface);
            let outcome = dataplane
                .detach(&host)
                .and_then(|()| dataplane.delete_veth(&host))
                .and_then(|()| daemon.unbind(&identity, &nic.interface).map(drop));
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
    }
    for (host, container_id, ifname) in dataplane.attachments_of_network(&conf.name)? {
        if !valid.contains(&(container_id.as_str(), ifname.as_str())) {
            if let Err(error) = dataplane.detach(&host).and_then(|()| dataplane.delete_veth(&host)) {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// STATUS (CNI 1.1.0): success when the daemon answers and has this network's subnet, so ADD
/// can be served; code 50 (not available) otherwise, which makes the runtime hold new pods back.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    needs_1_1(conf, "STATUS")?;
    let unavailable = |error: CniError| CniError::new(code::NOT_AVAILABLE, error.msg).with_details(error.details);
    let mut daemon = Daemon::connect(conf).map_err(unavailable)?;
    if daemon.has_subnet(&conf.subnet).map_err(unavailable)? {
        Ok(())
    } else {
        Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("ovn-vipd has no subnet {}", conf.subnet),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryError;

    /// Issue #13: a CNI caller can tell "retry" from "give up" by the daemon's ErrorInfo reason.
    #[test]
    fn a_reference_not_found_yet_is_try_again_later_and_a_taken_vip_is_refused() {
        let missing = tonic::Status::from(RegistryError::reference_not_found("vip", "pod-vip"));
        let error = refused("binding pod default/web-0", &missing);
        assert_eq!(error.code, code::TRY_AGAIN_LATER, "{error:?}");
        assert!(error.msg.contains("vip pod-vip does not exist"), "{error:?}");
        let taken = tonic::Status::from(RegistryError::InUse {
            kind: "vip",
            name: "pod-vip".into(),
            user: "pod default/web-0".into(),
        });
        assert_eq!(refused("binding", &taken).code, code::DAEMON_REFUSED);
        let other = tonic::Status::from(RegistryError::FailedPrecondition("no".into()));
        assert_eq!(refused("binding", &other).code, code::DAEMON_REFUSED);
        assert_eq!(
            refused("binding", &tonic::Status::unavailable("down")).code,
            code::TRY_AGAIN_LATER
        );
    }
}
