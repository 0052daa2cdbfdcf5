//! Store format 3: object revisions and a change log (trees `revisions` and `changes`, see
//! `src/store/revisions.rs`). Nothing to rewrite: sled creates the trees when they are opened,
//! and objects stored before keep revision 0 until their next write. The version still changes
//! so that an older ovn-vipd, which would write objects without revisions or log entries (and
//! so hide changes from resumed watches), refuses the store instead.

use super::{PlannedWrite, Trees};

pub const DESCRIPTION: &str = "object revisions and change log";

pub fn plan(_trees: &Trees) -> Result<Vec<PlannedWrite>, String> {
    Ok(Vec::new())
}
