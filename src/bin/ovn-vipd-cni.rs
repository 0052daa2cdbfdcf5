//! `ovn-vipd-cni`, the CNI plugin: reads the network configuration from stdin and the `CNI_*`
//! variables from the environment, and prints the answer of [`ovn_vipd::cni::main`].

// No unwrap()/expect() outside tests: a panic in a daemon or a plugin is an outage (clippy denies both).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => ovn_vipd::cni::main(|name| std::env::var(name).ok(), &stdin),
        Err(error) => ovn_vipd::cni::Outcome {
            stdout: ovn_vipd::cni::types::CniError::new(
                ovn_vipd::cni::types::code::IO_FAILURE,
                "cannot read the network configuration from stdin",
            )
            .with_details(error.to_string())
            .to_json(ovn_vipd::cni::types::CURRENT_VERSION),
            success: false,
        },
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
