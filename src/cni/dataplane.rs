//! The node's side of a pod network: a veth pair whose container end carries the pod's MAC,
//! addresses and routes, and whose host end is a port of the OVS integration bridge named after
//! the OVN logical switch port (`external_ids:iface-id`).
//!
//! Every step runs the node's own tools (`ip` from iproute2, `ovs-vsctl`, `ethtool`, and
//! `nsenter` to act inside the container's network namespace, which the runtime names by a
//! path). Each step is safe to repeat, and every removal succeeds when the thing is already gone,
//! as DEL must.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::types::{code, CniError};

/// The host end's name: `veth` and 11 hex digits of a stable hash (FNV-1a, fixed by this code,
/// not by the Rust release) of the container id and interface, so DEL finds it from the same
/// environment ADD had. 15 characters, the kernel's limit.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let key = format!("{container_id}/{ifname}");
    format!("veth{:011x}", fnv1a(key.as_bytes()) >> 20)
}

/// 64-bit FNV-1a, the plugin's stable hash (names derived from it must not change between
/// releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What the container's interface looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub mac: String,
    /// Global addresses with their prefix length (link-local ones are left out).
    pub addresses: Vec<IpNet>,
}

/// Runs the node's tools against one OVS bridge.
#[derive(Debug, Clone)]
pub struct Dataplane {
    pub bridge: String,
    /// `ovs-vsctl --db=...`, when not the default database.
    pub ovsdb: Option<String>,
    pub mtu: Option<u32>,
}

impl Dataplane {
    /// Creates the pair with the container end already inside `netns` under its final name (so
    /// it never collides with a host interface of that name). A leftover pair of an earlier
    /// attempt is removed first.
    pub fn create_veth(&self, host: &str, netns: &str, ifname: &str) -> Result<(), CniError> {
        self.delete_veth(host)?;
        let mut args = vec!["link", "add", host];
        let mtu = self.mtu.map(|mtu| mtu.to_string());
        if let Some(mtu) = &mtu {
            args.extend(["mtu", mtu.as_str()]);
        }
        args.extend(["type", "veth", "peer", "name", ifname]);
        if let Some(mtu) = &mtu {
            args.extend(["mtu", mtu.as_str()]);
        }
        args.extend(["netns", netns]);
        run("ip", &args)?;
        Ok(())
    }

    /// MAC, addresses, link up, a default route per family via the gateway, and transmit
    /// checksum offload off. The last is required with OVS's userspace datapath (TCP is
    /// silently dropped otherwise) and costs nothing measurable with the kernel datapath.
    pub fn configure_container(
        &self,
        netns: &str,
        ifname: &str,
        mac: &str,
        addresses: &[IpNet],
        gateways: &[IpAddr],
    ) -> Result<(), CniError> {
        let nsenter = |program: &str, args: &[&str]| in_netns(netns, program, args);
        nsenter("ip", &["link", "set", "dev", ifname, "address", mac])?;
        nsenter("ip", &["link", "set", "dev", "lo", "up"])?;
        for address in addresses {
            let address = address.to_string();
            // The daemon guarantees the address is unique: duplicate detection would only hold
            // an IPv6 address back for a second or two.
            let mut args = vec!["addr", "replace", address.as_str(), "dev", ifname];
            if address.contains(':') {
                args.push("nodad");
            }
            nsenter("ip", &args)?;
        }
        nsenter("ip", &["link", "set", "dev", ifname, "up"])?;
        for gateway in gateways {
            let family = if gateway.is_ipv4() { "-4" } else { "-6" };
            let gateway = gateway.to_string();
            nsenter(
                "ip",
                &[
                    family,
                    "route",
                    "replace",
                    "default",
                    "via",
                    gateway.as_str(),
                    "dev",
                    ifname,
                ],
            )?;
        }
        nsenter("ethtool", &["-K", ifname, "tx", "off"])?;
        Ok(())
    }

    /// Brings the host end up (checksum offload off, as above) and adds it to the bridge as the
    /// OVN port `port_name`.
    /// The interface records its CNI attachment (`ovn-vipd-container-id`, `ovn-vipd-network`,
    /// `ovn-vipd-ifname` in `external_ids`) for GC to find.
    pub fn attach(
        &self,
        host: &str,
        port_name: &str,
        container_id: &str,
        network: &str,
        ifname: &str,
    ) -> Result<(), CniError> {
        run("ip", &["link", "set", "dev", host, "up"])?;
        run("ethtool", &["-K", host, "tx", "off"])?;
        let iface_id = format!("external_ids:iface-id={port_name}");
        let owner = format!("external_ids:ovn-vipd-container-id={container_id}");
        let network = format!("external_ids:ovn-vipd-network=\"{network}\"");
        let ifname = format!("external_ids:ovn-vipd-ifname={ifname}");
        self.vsctl(&[
            "--may-exist",
            "add-port",
            &self.bridge,
            host,
            "--",
            "set",
            "interface",
            host,
            &iface_id,
            &owner,
            &network,
            &ifname,
        ])?;
        Ok(())
    }

    /// The bridge's interfaces made for attachments of `network`: (host end, container id,
    /// interface in the container).
    pub fn attachments_of_network(&self, network: &str) -> Result<Vec<(String, String, String)>, CniError> {
        let condition = format!("external_ids:ovn-vipd-network=\"{network}\"");
        let output = self.vsctl(&[
            "--format=json",
            "--columns=name,external_ids",
            "find",
            "interface",
            &condition,
        ])?;
        let malformed = || {
            CniError::new(
                code::DATAPLANE_FAILED,
                "unexpected output of `ovs-vsctl --format=json find`",
            )
            .with_details(output.clone())
        };
        let value: serde_json::Value = serde_json::from_str(&output).map_err(|_| malformed())?;
        let rows = value
            .get("data")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(malformed)?;
        let mut found = Vec::new();
        for row in rows {
            let name = row.get(0).and_then(serde_json::Value::as_str).ok_or_else(malformed)?;
            // ["map", [[key, value], ...]]
            let pairs = row
                .get(1)
                .and_then(|map| map.get(1))
                .and_then(serde_json::Value::as_array)
                .ok_or_else(malformed)?;
            let lookup = |key: &str| {
                pairs
                    .iter()
                    .find(|pair| pair.get(0).and_then(serde_json::Value::as_str) == Some(key))
                    .and_then(|pair| pair.get(1))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            };
            if let (Some(container_id), Some(ifname)) = (lookup("ovn-vipd-container-id"), lookup("ovn-vipd-ifname")) {
                found.push((name.to_string(), container_id, ifname));
            }
        }
        Ok(found)
    }

    /// Waits until ovn-controller has installed the port's flows (it then sets
    /// `external_ids:ovn-installed=true` on the interface). Code 11 when it does not in time.
    pub fn wait_ovn_installed(&self, host: &str, timeout: Duration) -> Result<(), CniError> {
        if timeout.is_zero() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let installed = self.vsctl(&["--if-exists", "get", "interface", host, "external_ids:ovn-installed"])?;
            if installed.trim().trim_matches('"') == "true" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("ovn-controller did not install the port of {host} within {timeout:?}"),
                )
                .with_details("is ovn-controller running on this node, and does the logical switch port exist?"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes the host end from the bridge; nothing to do when it is not there.
    pub fn detach(&self, host: &str) -> Result<(), CniError> {
        self.vsctl(&["--if-exists", "del-port", &self.bridge, host])?;
        Ok(())
    }

    /// Deletes the pair (deleting one end deletes both); nothing to do when it is gone.
    pub fn delete_veth(&self, host: &str) -> Result<(), CniError> {
        if link_exists(host)? {
            run("ip", &["link", "del", "dev", host])?;
        }
        Ok(())
    }

    /// Deletes the container's interface when the namespace and the interface still exist (the
    /// host end may be gone already while the container end is not, after a crash).
    pub fn delete_container_link(&self, netns: &str, ifname: &str) -> Result<(), CniError> {
        if netns.is_empty() || !std::path::Path::new(netns).exists() {
            return Ok(());
        }
        if self.container_link(netns, ifname)?.is_some() {
            in_netns(netns, "ip", &["link", "del", "dev", ifname])?;
        }
        Ok(())
    }

    /// The container interface's MAC and global addresses, or `None` when it does not exist.
    pub fn container_link(&self, netns: &str, ifname: &str) -> Result<Option<LinkState>, CniError> {
        let net = format!("--net={netns}");
        let args = [net.as_str(), "--", "ip", "-j", "addr", "show", "dev", ifname];
        let output = match command_output("nsenter", &args)? {
            Ok(stdout) => stdout,
            Err(stderr) if stderr.contains("does not exist") || stderr.contains("Cannot find device") => {
                return Ok(None)
            }
            Err(stderr) => return Err(step_failed("nsenter", &args, &stderr)),
        };
        parse_link_state(&output).map(Some)
    }

    /// The OVN port name the host end is attached as, if it is on the bridge.
    pub fn iface_id(&self, host: &str) -> Result<Option<String>, CniError> {
        let value = self.vsctl(&["--if-exists", "get", "interface", host, "external_ids:iface-id"])?;
        let value = value.trim().trim_matches('"');
        Ok((!value.is_empty()).then(|| value.to_string()))
    }

    /// Every OVS interface attached as `port_name`.
    pub fn interfaces_of_port(&self, port_name: &str) -> Result<Vec<String>, CniError> {
        let condition = format!("external_ids:iface-id=\"{port_name}\"");
        let names = self.vsctl(&["--bare", "--columns=name", "find", "interface", &condition])?;
        Ok(names
            .lines()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, CniError> {
        let db = self.ovsdb.as_ref().map(|db| format!("--db={db}"));
        let mut all: Vec<&str> = db.iter().map(String::as_str).collect();
        all.push("--timeout=10");
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }
}

/// Whether a host interface of that name exists.
pub fn link_exists(name: &str) -> Result<bool, CniError> {
    match command_output("ip", &["link", "show", "dev", name])? {
        Ok(_) => Ok(true),
        Err(stderr) if stderr.contains("does not exist") || stderr.contains("Cannot find device") => Ok(false),
        Err(stderr) => Err(step_failed("ip", &["link", "show", "dev", name], &stderr)),
    }
}

/// A host interface's MAC.
pub fn link_mac(name: &str) -> Result<String, CniError> {
    let output = run("ip", &["-j", "link", "show", "dev", name])?;
    let value: serde_json::Value = serde_json::from_str(&output).unwrap_or_default();
    value
        .get(0)
        .and_then(|link| link.get("address"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            CniError::new(code::DATAPLANE_FAILED, "unexpected output of `ip -j link show`").with_details(output.clone())
        })
}

fn parse_link_state(json: &str) -> Result<LinkState, CniError> {
    let malformed =
        || CniError::new(code::DATAPLANE_FAILED, "unexpected output of `ip -j addr show`").with_details(json);
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| malformed())?;
    let link = value.get(0).ok_or_else(malformed)?;
    let mac = link
        .get("address")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(malformed)?
        .to_string();
    let mut addresses = Vec::new();
    for info in link
        .get("addr_info")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        if info.get("scope").and_then(serde_json::Value::as_str) != Some("global") {
            continue;
        }
        let local = info.get("local").and_then(serde_json::Value::as_str);
        let prefix = info.get("prefixlen").and_then(serde_json::Value::as_u64);
        if let (Some(local), Some(prefix)) = (local, prefix) {
            if let Ok(address) = format!("{local}/{prefix}").parse::<IpNet>() {
                addresses.push(address);
            }
        }
    }
    Ok(LinkState { mac, addresses })
}

/// Runs a tool inside the namespace at path `netns` (nsenter's `--net` takes its path only as
/// `--net=PATH`).
fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String, CniError> {
    let net = format!("--net={netns}");
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Runs a tool; a failure is code 101 naming the command and its stderr, a tool that cannot be
/// started is code 5.
fn run(program: &str, args: &[&str]) -> Result<String, CniError> {
    command_output(program, args)?.map_err(|stderr| step_failed(program, args, &stderr))
}

fn step_failed(program: &str, args: &[&str], stderr: &str) -> CniError {
    CniError::new(code::DATAPLANE_FAILED, format!("`{program} {}` failed", args.join(" ")))
        .with_details(stderr.trim().to_string())
}

/// `Ok(Ok(stdout))` on success, `Ok(Err(stderr))` when the tool failed, `Err` when it could not
/// be started.
fn command_output(program: &str, args: &[&str]) -> Result<Result<String, String>, CniError> {
    let output = Command::new(program).args(args).output().map_err(|error| {
        CniError::new(code::IO_FAILURE, format!("cannot run {program}")).with_details(format!(
            "{error} (the node needs iproute2, openvswitch-switch, ethtool and util-linux)"
        ))
    })?;
    if output.status.success() {
        Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Ok(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_distinct_and_short() {
        let name = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(name, host_veth_name("0123456789abcdef", "eth0"));
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("veth"));
        assert_ne!(name, host_veth_name("0123456789abcdef", "net1"));
        assert_ne!(name, host_veth_name("0123456789abcdee", "eth0"));
        // Fixed by this code: a DEL by a newer build finds what an older ADD made.
        assert_eq!(host_veth_name("c1", "eth0"), "veth9e27a0abdbb");
    }

    #[test]
    fn link_state_from_ip_json() {
        let json = r#"[{"ifindex":2,"ifname":"eth0","address":"0a:00:00:00:00:01","addr_info":[
            {"family":"inet","local":"10.16.0.5","prefixlen":16,"scope":"global"},
            {"family":"inet6","local":"fd00::5","prefixlen":64,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let state = parse_link_state(json).unwrap();
        assert_eq!(state.mac, "0a:00:00:00:00:01");
        assert_eq!(
            state.addresses,
            vec!["10.16.0.5/16".parse::<IpNet>().unwrap(), "fd00::5/64".parse().unwrap()]
        );
        assert_eq!(parse_link_state("[]").unwrap_err().code, code::DATAPLANE_FAILED);
    }
}
