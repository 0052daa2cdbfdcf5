//! The status the sync writes back: a rule's and a VIP's Ready condition from what a pass
//! planned and NB refused, and NBUnavailable while NB is away.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::model::{Condition, SwitchLbRule, Vip, VipType};
use crate::nb::{Owner, Plan};
use crate::ovsdb::Client;
use crate::registry::{now_ms, Registry, RuleStatus, VipStatusUpdate};

use super::desired::{Blocked, Desired};

/// The one Ready condition, keeping its transition time when status and reason are unchanged.
pub(super) fn condition(
    status: bool,
    reason: impl Into<Cow<'static, str>>,
    message: impl Into<Cow<'static, str>>,
    previous: &[Condition],
) -> Vec<Condition> {
    let (reason, message) = (reason.into(), message.into());
    let last_transition_ms = previous
        .iter()
        .find(|condition| {
            condition.condition_type == "Ready" && condition.status == status && condition.reason == reason
        })
        .map(|condition| condition.last_transition_ms)
        .unwrap_or_else(now_ms);
    vec![Condition {
        condition_type: "Ready".into(),
        status,
        reason,
        message,
        last_transition_ms,
    }]
}

/// Every VIP: not Ready while NB is away.
pub(super) fn mark_unavailable(registry: &Registry, error: &str) {
    let message = format!("OVN NB is unavailable: {error}");
    registry.set_vip_conditions_where(|vip| {
        if !vip.is_allocated() {
            return None;
        }
        unavailable(&vip.conditions, &message)
    });
    // A rule's balancers are in NB too: not Ready while it is away (one that waits for its VIP
    // keeps saying why).
    registry.set_rule_conditions_where(|status| {
        let waits = status
            .conditions
            .iter()
            .any(|condition| matches!(condition.reason.as_ref(), "VipNotFound" | "VipNotReady"));
        if waits {
            return None;
        }
        unavailable(&status.conditions, &message)
    });
}

/// The NBUnavailable condition, or None when the VIP already says NB is unavailable: the
/// reconnect loop's error differs from one attempt to the next (a cluster's remotes in turn,
/// "connection lost" then "cannot connect"), and a new message each time would publish every
/// VIP again (and take a status revision each) at every attempt while NB is away.
fn unavailable(previous: &[Condition], message: &str) -> Option<Vec<Condition>> {
    let already = previous.iter().any(|condition| {
        condition.condition_type == "Ready" && !condition.status && condition.reason == "NBUnavailable"
    });
    (!already).then(|| condition(false, "NBUnavailable", message.to_string(), previous))
}

/// A VIP created or changed while NB is away says so at once (not "Pending").
pub(super) fn unavailable_if_disconnected(change: &crate::registry::Change, registry: &Registry, client: &Client) {
    let crate::registry::Change::Vip(name) = change else {
        return;
    };
    let state = client.state();
    if state.is_connected() {
        return;
    }
    let Ok(vip) = registry.get_vip(name) else { return };
    if !vip.is_allocated() {
        // Its own reason (SubnetNotFound, ...) says more than NB's absence.
        return;
    }
    let error = state.last_error.unwrap_or_else(|| "not connected".into());
    if let Some(conditions) = unavailable(&vip.conditions, &format!("OVN NB is unavailable: {error}")) {
        registry.set_vip_conditions(name, conditions);
    }
}

/// Rule status: the balancers' VIP entries and backends, or why there are none.
pub(super) fn write_rule_status(registry: &Registry, desired: &Desired, rules: &[SwitchLbRule]) {
    for rule in rules {
        let mut balancers: Vec<_> = desired
            .load_balancers
            .iter()
            .filter(|(owner, _)| matches!(owner, Owner::Rule { rule: name, .. } if *name == rule.name))
            .map(|(owner, lb)| (owner.to_string(), lb))
            .collect();
        balancers.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut vips: Vec<String> = Vec::new();
        for (_, lb) in &balancers {
            let mut frontends: Vec<String> = lb.vips.keys().map(SocketAddr::to_string).collect();
            frontends.sort();
            vips.extend(frontends);
        }
        let mut backends: Vec<String> = balancers
            .iter()
            .flat_map(|(_, lb)| lb.vips.values().flatten())
            .map(|backend| backend.ip().to_string())
            .collect();
        backends.sort();
        backends.dedup();
        let previous = registry.rule_status(&rule.name);
        let conditions = match desired
            .rules_blocked
            .get(&rule.name)
            .or(desired.rules_unready.get(&rule.name))
        {
            Some(blocked) => condition(false, blocked.reason, blocked.message.clone(), &previous.conditions),
            None => condition(
                true,
                "Synced",
                "NB holds this rule's load balancers",
                &previous.conditions,
            ),
        };
        registry.set_rule_status(
            &rule.name,
            RuleStatus {
                conditions,
                vips,
                backends,
            },
        );
    }
}

/// VIP status, from what was planned and refused; written only where it changes, in one call
/// (one lock, and one status revision for a pass that changes many). Takes the pass's VIPs by
/// value: each is let go before the statuses are written, so the registry changes its own VIP in
/// place instead of copying one the pass still shares.
pub(super) fn write_vip_status(registry: &Registry, desired: &Desired, plan: &Plan, vips: Vec<Arc<Vip>>) {
    let mut updates = Vec::new();
    for vip in vips {
        let name = &vip.spec.name;
        let (status, reason, message) = if let Some(pending) = &vip.pending {
            // Holds no addresses yet (a reference before its target): Ready=False with why,
            // e.g. SubnetNotFound naming the subnet, until the registry allocates it.
            (
                false,
                Cow::Owned(pending.reason.clone()),
                Cow::Owned(pending.message.clone()),
            )
        } else if let Some(Blocked::NoRouterPort { switch }) = desired.blocked.get(name) {
            (
                false,
                Cow::Borrowed("NoRouterPort"),
                Cow::Owned(format!("switch {switch} has no logical router port")),
            )
        } else if let Some(row) = desired
            .vip_ports
            .get(name)
            .into_iter()
            .flatten()
            .find_map(|port| plan.conflicts.get(port))
        {
            (
                false,
                Cow::Borrowed("Conflict"),
                Cow::Owned(format!("{row} exists and is not owned by ovn-vipd")),
            )
        } else if vip.spec.vip_type == VipType::SwitchLbVip && !desired.vips_served.contains(name) {
            // The router answers ARP/ND for the VIP only once a rule's balancer is on it.
            (
                false,
                Cow::Borrowed("NoRule"),
                Cow::Borrowed(
                    "no switch-LB rule serves this VIP yet: nothing answers for its addresses until one does",
                ),
            )
        } else {
            (
                true,
                Cow::Borrowed("Synced"),
                Cow::Borrowed("NB holds what this VIP needs"),
            )
        };
        // Status reports the MAC that answers ARP/ND for the VIP in NB, when it is not the VIP's
        // own: the router port's for a switch_lb_vip.
        let nb_mac = desired.vip_macs.get(name).copied().filter(|mac| *mac != vip.mac);
        let unchanged = vip.conditions.len() == 1
            && vip.conditions[0].status == status
            && vip.conditions[0].reason == reason
            && vip.conditions[0].message == message;
        if !unchanged || nb_mac != vip.nb_mac {
            updates.push(VipStatusUpdate {
                name: name.clone(),
                conditions: (!unchanged).then(|| condition(status, reason, message, &vip.conditions)),
                nb_mac,
            });
        }
    }
    registry.set_vip_statuses(updates);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: bool, reason: &'static str, message: &'static str) -> Vec<Condition> {
        vec![Condition {
            condition_type: "Ready".into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_ms: 7,
        }]
    }

    /// NB away with several remotes fails with another message at each attempt: a VIP that
    /// already says NBUnavailable is left as it is (no status change, no revision, no event for
    /// every VIP at every attempt).
    #[test]
    fn unavailable_is_set_once_while_nb_is_away() {
        let synced = ready(true, "Synced", "NB holds what this VIP needs");
        let first = unavailable(&synced, "OVN NB is unavailable: cannot connect to tcp:10.0.0.1:6641")
            .expect("a Ready VIP becomes NBUnavailable");
        assert_eq!(first[0].reason, "NBUnavailable");
        assert!(!first[0].status);
        assert_eq!(
            unavailable(&first, "OVN NB is unavailable: cannot connect to tcp:10.0.0.2:6641"),
            None
        );
        let no_rule = ready(false, "NoRule", "no switch-LB rule serves this VIP yet");
        let marked = unavailable(&no_rule, "OVN NB is unavailable: x").expect("another reason changes");
        assert_eq!(marked[0].reason, "NBUnavailable");
    }
}
