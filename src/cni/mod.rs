//! `ovn-vipd-cni`, the CNI plugin (specification 1.1.0 and 1.0.0; 0.3.x and 0.4.0 results on
//! request): ADD binds the pod's attachment (one NIC: `CNI_IFNAME`, with the addresses the
//! runtime asks for) through the daemon's `PodService` and builds a veth pair whose container end
//! carries the answer (MAC, addresses, default routes) and whose host end is the OVN port on the
//! OVS integration bridge; DEL undoes it and unbinds that NIC; CHECK compares what is there with
//! what the daemon holds; GC releases this network's attachments the runtime no longer lists;
//! STATUS says whether the daemon can serve ADD; VERSION lists the versions.
//!
//! - `config`: the network configuration and the `CNI_*` environment (parsing only).
//! - `types`: results, the VERSION answer and errors with the specification's codes.
//! - `dataplane`: the interfaces and the bridge port, through `ip`, `ovs-vsctl`, `ethtool` and
//!   `nsenter`; every step repeatable, every removal a success when already done.
//! - `plugin`: the commands, talking to the daemon over its unix socket.
//!
//! This module is a client of the API like `cli`: it knows protobuf types and nothing of the
//! daemon's internals. It never writes to stdout except the one answer [`main`] returns.

pub mod config;
pub mod dataplane;
pub mod plugin;
pub mod types;

use config::{Command, Invocation, NetConf};
use types::{CniError, VersionResult, CURRENT_VERSION};

/// What the process prints on stdout and whether it exits with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// Runs one invocation: `env` reads the environment, `stdin` is the network configuration.
pub fn main(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Errors are printed in the configuration's version when it can be read at all.
    let version = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|value| value.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|version| types::SUPPORTED_VERSIONS.contains(&version.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    match dispatch(env, stdin) {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(error) => Outcome {
            stdout: error.to_json(&version),
            success: false,
        },
    }
}

fn dispatch(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    let invocation = Invocation::from_env(env)?;
    if invocation.command == Command::Version {
        return to_json(&VersionResult::current());
    }
    let conf = NetConf::parse(stdin)?;
    match invocation.command {
        Command::Add => to_json(&plugin::add(&conf, &invocation)?),
        Command::Del => plugin::del(&conf, &invocation).map(|()| String::new()),
        Command::Check => plugin::check(&conf, &invocation).map(|()| String::new()),
        Command::Gc => plugin::gc(&conf).map(|()| String::new()),
        Command::Status => plugin::status(&conf).map(|()| String::new()),
        Command::Version => to_json(&VersionResult::current()),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CniError> {
    serde_json::to_string(value).map_err(|error| {
        CniError::new(types::code::IO_FAILURE, "cannot encode the result").with_details(error.to_string())
    })
}
