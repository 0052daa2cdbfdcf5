//! What a runtime hands the plugin: the network configuration on stdin and the `CNI_*`
//! environment variables. Parsing only; nothing here touches the system.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::types::{code, CniError, SUPPORTED_VERSIONS};
use crate::client::{Address, Settings, TlsFiles, TlsSetting};
use crate::model::ANNOTATION_VIP;

/// The daemon's default unix socket (as `ovn-vipd --listen` defaults it).
pub use crate::client::DEFAULT_SOCKET;
/// The OVS integration bridge ovn-controller uses unless told otherwise.
pub const DEFAULT_BRIDGE: &str = "br-int";
/// Kube-OVN's annotation choosing the logical switch (here: the subnet) of a pod.
pub const ANNOTATION_LOGICAL_SWITCH: &str = "ovn.kubernetes.io/logical_switch";

/// The plugin's network configuration, as the runtime passes it on stdin (the plugin's entry of
/// a `.conflist`, with `name` and `cniVersion` filled in by the runtime).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The daemons, tried in order: a comma-separated list of `unix:PATH` and `tcp:HOST:PORT`
    /// (see [`crate::client::Address`]). Absent: `serverSocket`.
    #[serde(default)]
    pub server: Option<String>,
    /// The daemon's unix socket (the older key; `server` replaces it, and both together are an
    /// error).
    #[serde(default)]
    pub server_socket: Option<PathBuf>,
    /// PEM CA that verifies the daemons' certificates: TLS on every `tcp:` address.
    #[serde(default)]
    pub tls_ca_cert: Option<PathBuf>,
    /// PEM client certificate and key (mTLS: the daemon's `tls-client-ca` must have signed it).
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    #[serde(default)]
    pub tls_private_key: Option<PathBuf>,
    /// The name the daemons' certificates carry, when not the host of the address.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Seconds per connection attempt to one daemon.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds a call keeps moving to another daemon after `UNAVAILABLE` (a daemon gone, or a
    /// standby naming the active one); 0 tries each call once.
    #[serde(default = "default_failover_timeout")]
    pub failover_timeout: u64,
    /// `server` (or `serverSocket`) parsed.
    #[serde(skip)]
    pub daemons: Vec<Address>,
    /// The subnet pods of this network are bound in (a pod's
    /// `ovn.kubernetes.io/logical_switch` annotation overrides it).
    pub subnet: String,
    /// The OVS integration bridge the host end of the veth is added to.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The OVS database `ovs-vsctl` talks to (its `--db`), when not the default one.
    #[serde(default)]
    pub ovsdb: Option<String>,
    /// MTU of both veth ends; the kernel's default (1500) when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Seconds ADD waits for ovn-controller to mark the port `ovn-installed` (its flows are in
    /// place); 0 does not wait.
    #[serde(default = "default_ovn_installed_timeout")]
    pub ovn_installed_timeout: u64,
    /// Seconds each call to the daemon may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: u64,
    /// CNI's conventional `args`; this plugin reads `args.cni`.
    #[serde(default)]
    pub args: ConfArgs,
    /// The namespace of pods a runtime outside Kubernetes starts (see [`PodIdentity::of`]).
    #[serde(default = "default_pod_namespace")]
    pub pod_namespace: String,
    /// What the runtime fills in for the capabilities the plugin's entry declares
    /// (`"capabilities": {"ips": true, "mac": true}`).
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// GC (CNI 1.1.0): the attachments the runtime still has; everything else this network
    /// bound is released.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Vec<ValidAttachment>,
}

/// The `runtimeConfig` of the CNI conventions this plugin honours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    /// The `ips` capability: addresses for the interface, with or without prefix length.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `mac` capability.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The addresses and MAC a runtime asks for one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticRequest {
    /// Without prefix length.
    pub ips: Vec<std::net::IpAddr>,
    pub mac: Option<String>,
}

impl StaticRequest {
    /// From `runtimeConfig.ips`/`runtimeConfig.mac` (code 7 when malformed) and the `IP`/`MAC`
    /// args of `CNI_ARGS` (code 4), both conventions podman and others use (a single address
    /// goes in `IP`, several in `runtimeConfig.ips`). Both sources together must agree.
    pub fn of(conf: &NetConf, invocation: &Invocation) -> Result<StaticRequest, CniError> {
        let parse_ips = |texts: &mut dyn Iterator<Item = &str>, code: u32, source: &str| {
            texts
                .map(|text| {
                    let address = text.split_once('/').map_or(text, |(address, _)| address).trim();
                    address
                        .parse::<std::net::IpAddr>()
                        .map_err(|_| CniError::new(code, format!("{source}: {text:?} is not an IP address")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let parse_mac = |text: &str, code: u32, source: &str| {
            text.parse::<crate::model::MacAddr>()
                .map(|mac| mac.to_string())
                .map_err(|_| CniError::new(code, format!("{source}: {text:?} is not a MAC address")))
        };
        let from_conf = parse_ips(
            &mut conf.runtime_config.ips.iter().map(String::as_str),
            code::INVALID_CONFIG,
            "runtimeConfig.ips",
        )?;
        let from_args = parse_ips(
            &mut invocation.args.get("IP").into_iter().flat_map(|list| list.split(',')),
            code::INVALID_ENVIRONMENT,
            "CNI_ARGS IP",
        )?;
        let conf_mac = conf
            .runtime_config
            .mac
            .as_deref()
            .filter(|mac| !mac.is_empty())
            .map(|mac| parse_mac(mac, code::INVALID_CONFIG, "runtimeConfig.mac"))
            .transpose()?;
        let args_mac = invocation
            .args
            .get("MAC")
            .map(|mac| parse_mac(mac, code::INVALID_ENVIRONMENT, "CNI_ARGS MAC"))
            .transpose()?;
        let conflict = |what: &str| {
            Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("runtimeConfig.{what} and the CNI_ARGS ask for different {what}"),
            ))
        };
        let ips = match (from_conf.is_empty(), from_args.is_empty()) {
            (false, false) if from_conf != from_args => return conflict("ips"),
            (false, _) => from_conf,
            (true, _) => from_args,
        };
        let mac = match (conf_mac, args_mac) {
            (Some(a), Some(b)) if a != b => return conflict("mac"),
            (Some(mac), _) | (None, Some(mac)) => Some(mac),
            (None, None) => None,
        };
        for family in [true, false] {
            if ips.iter().filter(|ip| ip.is_ipv4() == family).count() > 1 {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "at most one address per family can be asked for an interface",
                ));
            }
        }
        Ok(StaticRequest { ips, mac })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: PodArgs,
}

/// What a runtime knows about the pod and a CNI configuration can carry: its labels (matched
/// against AAP and switch-LB selectors), its annotations (`ovn.kubernetes.io/vip`,
/// `ovn.kubernetes.io/aaps`, `ovn.kubernetes.io/logical_switch`) and what owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodArgs {
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// `StatefulSet`, `VirtualMachine`, or anything else (addresses go with the pod).
    #[serde(default)]
    pub owner_kind: String,
}

fn default_connect_timeout() -> u64 {
    5
}

fn default_failover_timeout() -> u64 {
    20
}

/// The keys saying where the daemons are and how to reach them, and what JSON each must be:
/// checked before decoding, so a wrong one is named (serde's own message does not say which).
const CONNECTION_KEYS: [(&str, KeyType); 9] = [
    ("server", KeyType::String),
    ("serverSocket", KeyType::String),
    ("tlsCaCert", KeyType::String),
    ("tlsCertificate", KeyType::String),
    ("tlsPrivateKey", KeyType::String),
    ("tlsServerName", KeyType::String),
    ("connectTimeout", KeyType::Seconds),
    ("requestTimeout", KeyType::Seconds),
    ("failoverTimeout", KeyType::Seconds),
];

#[derive(Clone, Copy)]
enum KeyType {
    String,
    Seconds,
}

/// The configuration key of a TLS setting, for error messages.
pub fn tls_key(setting: TlsSetting) -> &'static str {
    match setting {
        TlsSetting::CaCertificate => "tlsCaCert",
        TlsSetting::Certificate => "tlsCertificate",
        TlsSetting::PrivateKey => "tlsPrivateKey",
        TlsSetting::ServerName => "tlsServerName",
    }
}

fn default_pod_namespace() -> String {
    "default".to_string()
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

fn default_ovn_installed_timeout() -> u64 {
    30
}

fn default_request_timeout() -> u64 {
    30
}

impl NetConf {
    /// Decodes and checks the configuration: not JSON is code 6, JSON of the wrong shape or
    /// with bad values code 7, an unsupported `cniVersion` code 1.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
            CniError::new(code::DECODE_FAILURE, "the network configuration is not JSON").with_details(error.to_string())
        })?;
        for (key, kind) in CONNECTION_KEYS {
            let Some(given) = value.get(key) else { continue };
            let fits = match kind {
                KeyType::String => given.is_string() || given.is_null(),
                KeyType::Seconds => given.is_u64(),
            };
            if !fits {
                let wanted = match kind {
                    KeyType::String => "a string",
                    KeyType::Seconds => "a whole number of seconds",
                };
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("invalid network configuration: {key:?} must be {wanted}, not {given}"),
                ));
            }
        }
        let mut conf: NetConf = serde_json::from_value(value).map_err(|error| {
            CniError::new(code::INVALID_CONFIG, "invalid network configuration").with_details(error.to_string())
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {:?} is not supported", conf.cni_version),
            )
            .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
        }
        let invalid = |what: String| Err(CniError::new(code::INVALID_CONFIG, what));
        if conf.subnet.is_empty() {
            return invalid("\"subnet\" must name the ovn-vipd subnet".into());
        }
        if !is_interface_name(&conf.bridge) {
            return invalid(format!("\"bridge\": {:?} is not an OVS bridge name", conf.bridge));
        }
        if let Some(mtu) = conf.mtu {
            if !(576..=65535).contains(&mtu) {
                return invalid(format!("\"mtu\": {mtu} is outside 576..65535"));
            }
        }
        if !is_dns_label(&conf.pod_namespace) {
            return invalid(format!(
                "\"podNamespace\": {:?} is not a DNS-1123 label",
                conf.pod_namespace
            ));
        }
        if conf.request_timeout == 0 {
            return invalid("\"requestTimeout\" must be at least 1 second".into());
        }
        if conf.connect_timeout == 0 {
            return invalid("\"connectTimeout\" must be at least 1 second".into());
        }
        conf.daemons = match (&conf.server, &conf.server_socket) {
            (Some(_), Some(_)) => {
                return invalid("\"server\" and \"serverSocket\" both name the daemon: keep \"server\"".into())
            }
            (Some(server), None) => match Address::parse_list(server) {
                Ok(daemons) => daemons,
                Err(message) => return invalid(format!("\"server\": {message}")),
            },
            (None, Some(socket)) if socket.as_os_str().is_empty() => {
                return invalid("\"serverSocket\" is empty".into())
            }
            (None, Some(socket)) => vec![Address::Unix(socket.clone())],
            (None, None) => vec![Address::Unix(PathBuf::from(DEFAULT_SOCKET))],
        };
        Ok(conf)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// How the plugin reaches the daemons.
    pub fn client_settings(&self) -> Settings {
        Settings {
            addresses: self.daemons.clone(),
            tls: TlsFiles {
                ca_certificate: self.tls_ca_cert.clone(),
                certificate: self.tls_certificate.clone(),
                private_key: self.tls_private_key.clone(),
                server_name: self.tls_server_name.clone(),
            },
            connect_timeout: Duration::from_secs(self.connect_timeout),
            request_timeout: self.request_timeout(),
            failover_timeout: Duration::from_secs(self.failover_timeout),
        }
    }

    pub fn ovn_installed_timeout(&self) -> Duration {
        Duration::from_secs(self.ovn_installed_timeout)
    }

    /// Results before 1.0.0 carry a `version` per IP; CHECK exists from 0.4.0 on.
    pub fn is_pre_1_0(&self) -> bool {
        self.cni_version.starts_with("0.")
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_and_status(&self) -> bool {
        !self.cni_version.starts_with("0.") && self.cni_version != "1.0.0"
    }
}

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// CNI 1.1.0: release what the runtime no longer has.
    Gc,
    /// CNI 1.1.0: whether the plugin can serve ADD.
    Status,
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime did not pass one (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

impl Invocation {
    /// Reads the environment through `get` (`std::env::var` in the binary), checking what the
    /// command needs: code 4 when something is missing or malformed.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let invalid = |msg: String| CniError::new(code::INVALID_ENVIRONMENT, msg);
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some(other) => {
                return Err(invalid(format!(
                    "CNI_COMMAND {other:?} is not ADD, DEL, CHECK, GC, STATUS or VERSION"
                )))
            }
            None => return Err(invalid("CNI_COMMAND is not set".into())),
        };
        let value = |name: &str| get(name).unwrap_or_default();
        let invocation = Invocation {
            command,
            container_id: value("CNI_CONTAINERID"),
            netns: value("CNI_NETNS"),
            ifname: value("CNI_IFNAME"),
            args: CniArgs::parse(&value("CNI_ARGS"))?,
        };
        // These act on the network, not on one container.
        if matches!(command, Command::Version | Command::Gc | Command::Status) {
            return Ok(invocation);
        }
        if invocation.container_id.is_empty() {
            return Err(invalid("CNI_CONTAINERID is not set".into()));
        }
        if !is_interface_name(&invocation.ifname) {
            return Err(invalid(format!(
                "CNI_IFNAME {:?} is not a Linux interface name (1-15 characters)",
                invocation.ifname
            )));
        }
        if command != Command::Del && invocation.netns.is_empty() {
            return Err(invalid("CNI_NETNS is not set".into()));
        }
        Ok(invocation)
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub values: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(text: &str) -> Result<CniArgs, CniError> {
        let mut values = BTreeMap::new();
        for pair in text.split(';').filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                ));
            };
            values.insert(key.to_string(), value.to_string());
        }
        Ok(CniArgs { values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

/// Who the pod is, as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
}

/// Hex digits of the container id's hash in a derived pod name.
const ID_HASH_DIGITS: usize = 8;

impl PodIdentity {
    /// The pod's identity for the daemon.
    ///
    /// - A Kubernetes runtime (containerd, CRI-O) passes `K8S_POD_NAMESPACE` and `K8S_POD_NAME`
    ///   in `CNI_ARGS`: they name the pod as they are, and must be DNS-1123 labels (code 4).
    /// - Any other runtime (podman passes only `K8S_POD_NAME=<container name>`; nerdctl and
    ///   `cnitool` pass nothing) gets a derived identity: the name is the container name (or,
    ///   without one, the first 12 characters of the container id) made a DNS-1123 label
    ///   (lowercase, every other character `-`, cut to 54 characters) followed by `-` and 8 hex
    ///   digits of a hash of the container id, so two containers never share one; the namespace
    ///   is the configuration's `podNamespace` ("default" unless set). The same container (a
    ///   `podman restart`, a DEL) always gets the same identity.
    pub fn of(invocation: &Invocation, pod_namespace: &str) -> Result<PodIdentity, CniError> {
        if let (Some(namespace), Some(name)) = (
            invocation.args.get("K8S_POD_NAMESPACE"),
            invocation.args.get("K8S_POD_NAME"),
        ) {
            for (what, value) in [("pod name", name), ("pod namespace", namespace)] {
                if !is_dns_label(value) {
                    return Err(CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!("{what} {value:?} is not a DNS-1123 label"),
                    )
                    .with_details("K8S_POD_NAME and K8S_POD_NAMESPACE in CNI_ARGS name a Kubernetes pod"));
                }
            }
            return Ok(PodIdentity {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        let base = invocation
            .args
            .get("K8S_POD_NAME")
            .unwrap_or_else(|| &invocation.container_id[..invocation.container_id.len().min(12)]);
        Ok(PodIdentity {
            namespace: pod_namespace.to_string(),
            name: derived_name(base, &invocation.container_id),
        })
    }
}

/// `<sanitised base>-<8 hex digits of FNV-1a(container id)>`, a DNS-1123 label.
pub fn derived_name(base: &str, container_id: &str) -> String {
    let mut label: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    label.truncate(63 - 1 - ID_HASH_DIGITS);
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "pod" } else { label };
    let hash = super::dataplane::fnv1a(container_id.as_bytes()) >> (64 - 4 * ID_HASH_DIGITS);
    format!("{label}-{hash:0width$x}", width = ID_HASH_DIGITS)
}

impl PodArgs {
    /// The subnet to bind in: the pod's `ovn.kubernetes.io/logical_switch` annotation, else the
    /// configuration's.
    pub fn subnet<'a>(&'a self, conf: &'a NetConf) -> &'a str {
        self.annotations
            .get(ANNOTATION_LOGICAL_SWITCH)
            .map(String::as_str)
            .filter(|subnet| !subnet.is_empty())
            .unwrap_or(&conf.subnet)
    }

    /// Whether the pod asks for a VIP's address (scenario 3).
    pub fn wants_vip(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_VIP).map(String::as_str)
    }
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace or `:`.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn a_full_configuration_parses_with_defaults_for_what_is_absent() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"ovn","type":"ovn-vipd-cni","subnet":"ovn-default",
                "ipam":{"ignored":true},
                "args":{"cni":{"labels":{"app":"web"},"annotations":{"ovn.kubernetes.io/vip":"v1"},"ownerKind":"StatefulSet"}}}"#,
        )
        .unwrap();
        assert_eq!(conf.subnet, "ovn-default");
        assert_eq!(conf.bridge, "br-int");
        assert_eq!(conf.daemons, vec![Address::Unix(PathBuf::from(DEFAULT_SOCKET))]);
        assert_eq!(conf.client_settings().connect_timeout, Duration::from_secs(5));
        assert_eq!(conf.ovn_installed_timeout, 30);
        assert_eq!(conf.args.cni.labels["app"], "web");
        assert_eq!(conf.args.cni.owner_kind, "StatefulSet");
        assert_eq!(conf.args.cni.wants_vip(), Some("v1"));
        assert_eq!(conf.args.cni.subnet(&conf), "ovn-default");
    }

    #[test]
    fn bad_configurations_get_the_specification_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE_FAILURE);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap_err().code,
            code::INVALID_CONFIG,
            "subnet is required"
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":"s","mtu":"big"}"#)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":"s","bridge":"a/b"}"#)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"2.0.0","subnet":"s"}"#)
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":""}"#)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn connection_keys_name_the_daemons_and_a_bad_one_is_named() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","subnet":"s","server":"tcp:10.99.0.1:50051, tcp:[fd00::1]:50051",
                "tlsCaCert":"/etc/ovn-vipd/ca.pem","tlsCertificate":"/etc/ovn-vipd/node.pem",
                "tlsPrivateKey":"/etc/ovn-vipd/node-key.pem","connectTimeout":2,"failoverTimeout":0}"#,
        )
        .unwrap();
        let settings = conf.client_settings();
        assert_eq!(settings.addresses.len(), 2);
        assert_eq!(settings.addresses[1].to_string(), "tcp:[fd00::1]:50051");
        assert_eq!(settings.tls.ca_certificate, Some(PathBuf::from("/etc/ovn-vipd/ca.pem")));
        assert_eq!(settings.connect_timeout, Duration::from_secs(2));
        assert_eq!(settings.failover_timeout, Duration::ZERO);
        // The older key still works.
        let old = NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":"s","serverSocket":"/run/x.sock"}"#).unwrap();
        assert_eq!(old.daemons, vec![Address::Unix("/run/x.sock".into())]);
        for (conf, key) in [
            (r#""server":"ssl:10.0.0.1:6641""#, "\"server\""),
            (r#""server":"tcp:10.0.0.1""#, "\"server\""),
            (r##""server":"""##, "\"server\""),
            (r#""server":5"#, "\"server\""),
            (r#""server":"unix:/a","serverSocket":"/b""#, "\"serverSocket\""),
            (r#""tlsCaCert":["ca.pem"]"#, "\"tlsCaCert\""),
            (r#""connectTimeout":"5s""#, "\"connectTimeout\""),
            (r#""connectTimeout":0"#, "\"connectTimeout\""),
            (r#""failoverTimeout":-1"#, "\"failoverTimeout\""),
            (r#""requestTimeout":1.5"#, "\"requestTimeout\""),
        ] {
            let text = format!(r#"{{"cniVersion":"1.0.0","subnet":"s",{conf}}}"#);
            let error = NetConf::parse(text.as_bytes()).unwrap_err();
            assert_eq!(error.code, code::INVALID_CONFIG, "{conf}");
            assert!(error.msg.contains(key), "{conf}: {}", error.msg);
        }
    }

    #[test]
    fn cni_args_are_key_value_pairs() {
        let args = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=").unwrap();
        assert_eq!(args.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(args.get("K8S_POD_UID"), None, "an empty value counts as absent");
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse("a=1;junk").unwrap_err().code, code::INVALID_ENVIRONMENT);
    }

    #[test]
    fn the_environment_is_checked_per_command() {
        let add = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1"),
        ]))
        .unwrap();
        assert_eq!(add.command, Command::Add);
        assert_eq!(
            PodIdentity::of(&add, "default").unwrap(),
            PodIdentity {
                namespace: "ns1".into(),
                name: "p1".into()
            }
        );
        let missing_netns = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]));
        assert_eq!(missing_netns.unwrap_err().code, code::INVALID_ENVIRONMENT);
        // DEL may come without a namespace.
        let del = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "ABC"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        let derived = PodIdentity::of(&del, "runtime").unwrap();
        assert_eq!(
            derived.namespace, "runtime",
            "outside Kubernetes the configuration names the namespace"
        );
        assert!(derived.name.starts_with("abc-"), "{derived:?}");
        for (name, value) in [("CNI_COMMAND", "ATTACH"), ("CNI_IFNAME", "a-very-long-interface")] {
            let mut pairs = vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
            ];
            pairs.retain(|(key, _)| *key != name);
            pairs.push((name, value));
            assert_eq!(
                Invocation::from_env(env(&pairs)).unwrap_err().code,
                code::INVALID_ENVIRONMENT,
                "{name}={value}"
            );
        }
        let version = Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(version.command, Command::Version);
        let bad_name = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Not_A_Label"),
        ]))
        .unwrap();
        assert_eq!(
            PodIdentity::of(&bad_name, "default").unwrap_err().code,
            code::INVALID_ENVIRONMENT,
            "a Kubernetes pod name is taken as it is"
        );
    }

    #[test]
    fn identities_outside_kubernetes_are_valid_unique_and_stable() {
        let invocation = |id: &str, args: &str| Invocation {
            command: Command::Add,
            container_id: id.into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: CniArgs::parse(args).unwrap(),
        };
        let id = "4f1c0d2b9e8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";
        // podman: its generated names have `_`; names may have capitals, dots, anything.
        for (args, prefix) in [
            ("IgnoreUnknown=1;K8S_POD_NAME=cool_wilson", "cool-wilson-"),
            ("K8S_POD_NAME=Web.Server_1", "web-server-1-"),
            ("K8S_POD_NAME=__", "pod-"),
            ("", "4f1c0d2b9e8a-"),
            ("K8S_POD_NAMESPACE=ns-only", "4f1c0d2b9e8a-"),
        ] {
            let pod = PodIdentity::of(&invocation(id, args), "containers").unwrap();
            assert!(pod.name.starts_with(prefix), "{args}: {pod:?}");
            assert!(is_dns_label(&pod.name), "{args}: {pod:?}");
            assert_eq!(pod.namespace, "containers");
            assert_eq!(
                pod,
                PodIdentity::of(&invocation(id, args), "containers").unwrap(),
                "stable"
            );
        }
        let long = "a".repeat(200);
        let pod = PodIdentity::of(&invocation(id, &format!("K8S_POD_NAME={long}")), "default").unwrap();
        assert_eq!(pod.name.len(), 63);
        assert!(is_dns_label(&pod.name));
        // Two containers with one name (a name re-used after `podman rm`) are two pods.
        let other = PodIdentity::of(&invocation("another-id", "K8S_POD_NAME=web"), "default").unwrap();
        let first = PodIdentity::of(&invocation(id, "K8S_POD_NAME=web"), "default").unwrap();
        assert_ne!(other, first);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":"s","podNamespace":"Bad_NS"}"#)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn static_requests_come_from_runtime_config_or_cni_args() {
        let invocation = |args: &str| Invocation {
            command: Command::Add,
            container_id: "c".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: CniArgs::parse(args).unwrap(),
        };
        let conf = |extra: &str| {
            NetConf::parse(format!(r#"{{"cniVersion":"1.0.0","subnet":"s"{extra}}}"#).as_bytes()).unwrap()
        };
        let plain = conf("");
        assert_eq!(
            StaticRequest::of(&plain, &invocation("")).unwrap(),
            StaticRequest::default()
        );
        // podman: one address and the MAC in CNI_ARGS.
        let podman = StaticRequest::of(
            &plain,
            &invocation("IgnoreUnknown=1;MAC=02:00:00:00:05:05;IP=10.16.5.5"),
        )
        .unwrap();
        assert_eq!(podman.ips, vec!["10.16.5.5".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(podman.mac.as_deref(), Some("02:00:00:00:05:05"));
        // The capabilities, with prefix lengths, both families.
        let capabilities = conf(r#","runtimeConfig":{"ips":["10.16.5.5/16","fd00::5/64"],"mac":"02:00:00:00:05:06"}"#);
        let request = StaticRequest::of(&capabilities, &invocation("")).unwrap();
        assert_eq!(request.ips.len(), 2);
        assert_eq!(request.mac.as_deref(), Some("02:00:00:00:05:06"));
        // Both sources must agree; malformed values get the code of their source.
        assert_eq!(
            StaticRequest::of(&capabilities, &invocation("IP=10.16.9.9"))
                .unwrap_err()
                .code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            StaticRequest::of(&plain, &invocation("IP=10.16.x")).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            StaticRequest::of(&plain, &invocation("MAC=zz")).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            StaticRequest::of(&conf(r#","runtimeConfig":{"ips":["nope"]}"#), &invocation(""))
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            StaticRequest::of(
                &conf(r#","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}"#),
                &invocation("")
            )
            .unwrap_err()
            .code,
            code::INVALID_CONFIG,
            "two of a family"
        );
    }

    #[test]
    fn gc_and_status_environment_and_valid_attachments() {
        let gc = Invocation::from_env(env(&[("CNI_COMMAND", "GC")])).unwrap();
        assert_eq!(gc.command, Command::Gc, "no container, interface or namespace needed");
        assert_eq!(
            Invocation::from_env(env(&[("CNI_COMMAND", "STATUS")])).unwrap().command,
            Command::Status
        );
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","subnet":"s",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert!(conf.has_gc_and_status());
        assert!(!conf.is_pre_1_0());
        assert_eq!(
            conf.valid_attachments,
            vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        assert!(!NetConf::parse(br#"{"cniVersion":"1.0.0","subnet":"s"}"#)
            .unwrap()
            .has_gc_and_status());
    }

    #[test]
    fn the_logical_switch_annotation_overrides_the_subnet() {
        let mut conf = NetConf::parse(br#"{"cniVersion":"0.4.0","subnet":"ovn-default"}"#).unwrap();
        assert!(conf.is_pre_1_0());
        conf.args
            .cni
            .annotations
            .insert(ANNOTATION_LOGICAL_SWITCH.into(), "net2".into());
        assert_eq!(conf.args.cni.subnet(&conf), "net2");
    }
}
