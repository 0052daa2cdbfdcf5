//! Store format 1: trees `subnets`, `vips`, `pods`, `slrs` (names → versioned bincode records)
//! and `ips`, `macs` (allocations). In this format allocation keys are the subnet name, a NUL,
//! and the address or MAC as text (`10.16.0.5`, `fd00::5`, `02:00:00:00:00:01`).
//! On a new store there is nothing to change: sled creates trees when they are opened.

use super::{PlannedWrite, Trees};

pub const DESCRIPTION: &str = "initial layout";

pub fn plan(_trees: &Trees) -> Result<Vec<PlannedWrite>, String> {
    Ok(Vec::new())
}
