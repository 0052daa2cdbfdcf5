//! What the CNI specification 1.0.0 says a plugin prints: results, the VERSION answer and errors
//! with their well-known codes.

use serde::Serialize;

/// The versions this plugin answers in (results for ADD differ only in the `version` field of
/// each IP, which 1.0.0 dropped; 1.1.0 adds the GC and STATUS commands).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version the plugin speaks when the configuration does not say.
pub const CURRENT_VERSION: &str = "1.0.0";

/// Error codes of the CNI specification (section "Error"); 100 and above are this plugin's own.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure, e.g. a tool that cannot be started.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (the configuration is not JSON).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the daemon is unreachable or OVN has not caught up.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS (1.1.0): the plugin is not available, it cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// ovn-vipd refused the request (the gRPC status is in `details`).
    pub const DAEMON_REFUSED: u32 = 100;
    /// A dataplane step (`ip`, `ovs-vsctl`, `ethtool`) failed.
    pub const DATAPLANE_FAILED: u32 = 101;
    /// CHECK found the interface not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error: printed as JSON on stdout, with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON the specification asks for, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ErrorOutput<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let output = ErrorOutput {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&output).unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }
}

/// The answer to VERSION.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: &'static str,
    pub supported_versions: Vec<&'static str>,
}

impl VersionResult {
    pub fn current() -> VersionResult {
        VersionResult {
            cni_version: CURRENT_VERSION,
            supported_versions: SUPPORTED_VERSIONS.to_vec(),
        }
    }
}

/// The answer to ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// One interface the plugin created; `sandbox` is set for the one inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address given to an interface of `interfaces` (by index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    /// "4" or "6"; only results before 1.0.0 carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// With prefix length, e.g. "10.16.0.5/16".
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings: the daemon has none to give, so this is always empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_as_the_specification_shows() {
        let error = CniError::new(code::TRY_AGAIN_LATER, "ovn-vipd is unreachable").with_details("connection refused");
        let json: serde_json::Value = serde_json::from_str(&error.to_json("1.0.0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "1.0.0", "code": 11, "msg": "ovn-vipd is unreachable", "details": "connection refused"})
        );
        let bare: serde_json::Value =
            serde_json::from_str(&CniError::new(code::INVALID_CONFIG, "bad").to_json("0.4.0")).unwrap();
        assert_eq!(
            bare,
            serde_json::json!({"cniVersion": "0.4.0", "code": 7, "msg": "bad"})
        );
    }

    #[test]
    fn version_answer_lists_every_supported_version() {
        let json = serde_json::to_value(VersionResult::current()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn add_result_shape() {
        let result = AddResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                Interface {
                    name: "veth0123456789a".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:00:00:00:00:01".into(),
                    sandbox: Some("/var/run/netns/pod".into()),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: "10.16.0.5/16".into(),
                gateway: Some("10.16.0.1".into()),
                interface: 1,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.16.0.1".into()),
            }],
            dns: Dns {},
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "veth0123456789a", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/var/run/netns/pod"}
                ],
                "ips": [{"address": "10.16.0.5/16", "gateway": "10.16.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.16.0.1"}],
                "dns": {}
            })
        );
    }
}
