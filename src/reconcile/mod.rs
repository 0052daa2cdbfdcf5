//! NB sync: computes the rows NB should hold from the registry (`desired`), diffs them against
//! the OVSDB client's cache, and sends only the difference, in one transaction. A change to one
//! object is reconciled by a pass over what it affects (`scope`), found through the cache's
//! indexes and the sync's memory, so its cost does not grow with the store. A full pass (start-up,
//! reconnect, lag, the periodic tick) looks at everything and collects what nothing wants, so a
//! missed event costs nothing but latency. A pass with nothing to change sends nothing.
//!
//! It never modifies or deletes a row without the daemon's mark ([`crate::nb::is_owned`]). It
//! speaks the project's model only: `nb` encodes what it wants into rows and operations and
//! decodes NB's rows and changes for it.

pub mod desired;
pub mod scope;

mod compute;
mod controller;
mod status;

use std::time::Instant;

use tracing::{debug, info};

pub use crate::nb::{Difference, Plan};
pub use compute::{compute_plan, Computed};
pub use controller::{is_lock_refusal, run, ControllerConfig, Hooks};

use crate::ovsdb::{Client, Operation, OvsdbError};
use crate::registry::Registry;
use crate::telemetry;
use scope::{Dirty, Memory};

/// One pass over `dirty`: compute, diff, send; then write the status of the VIPs and rules in
/// scope from what NB holds.
pub async fn pass(
    registry: &Registry,
    client: &Client,
    dirty: &Dirty,
    memory: &mut Memory,
    lock: Option<&str>,
) -> Result<usize, OvsdbError> {
    let started = Instant::now();
    let Computed {
        desired,
        plan,
        vips,
        rules,
        examined,
    } = compute_plan(registry, &client.cache(), dirty, memory);
    let computed = started.elapsed();
    if dirty.full {
        let span = tracing::Span::current();
        span.record(
            "vips",
            tracing::field::display(controller::span_names(vips.iter().map(|vip| vip.spec.name.clone()))),
        );
        span.record(
            "rules",
            tracing::field::display(controller::span_names(rules.iter().map(|rule| rule.name.clone()))),
        );
    }
    let kind = if dirty.full { "full" } else { "incremental" };
    let metrics = telemetry::metrics();
    metrics
        .sync_passes
        .get_or_create(&telemetry::PassLabels { kind: kind.into() })
        .inc();
    metrics.sync_pass_objects.set(examined as i64);
    let sent = plan.operations.len();
    let transact_started = Instant::now();
    if sent > 0 {
        debug!(operations = sent, "applying NB changes");
        match lock {
            // The fence: the server refuses the whole transaction unless this session holds the
            // lock (RFC 7047 §5.2.10), so a daemon that lost it cannot land a write.
            Some(lock) => {
                let mut operations = Vec::with_capacity(sent + 1);
                operations.push(Operation::Assert { lock: lock.to_string() });
                operations.extend(plan.operations.iter().cloned());
                client.transact(&operations).await?;
            }
            None => {
                client.transact(&plan.operations).await?;
            }
        }
    }
    let transacted = transact_started.elapsed();
    let status_started = Instant::now();
    status::write_rule_status(registry, &desired, &rules);
    status::write_vip_status(registry, &desired, &plan, vips);
    let statuses = status_started.elapsed();
    // Where a pass's time goes, one line: a full pass at info (start-up, reconnect, the periodic
    // tick: the operator's "restart to converged" is mostly this), an incremental one at debug.
    let (compute_ms, transact_ms, status_ms) = (
        computed.as_secs_f64() * 1e3,
        transacted.as_secs_f64() * 1e3,
        statuses.as_secs_f64() * 1e3,
    );
    if dirty.full {
        info!(
            examined,
            operations = sent,
            compute_ms,
            transact_ms,
            status_ms,
            "full pass"
        );
    } else {
        debug!(
            examined,
            operations = sent,
            compute_ms,
            transact_ms,
            status_ms,
            "incremental pass"
        );
    }
    Ok(sent)
}
