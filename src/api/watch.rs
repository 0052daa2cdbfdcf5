//! Watches of every kind, resumable from a revision (like a Kubernetes watch from a
//! resourceVersion). One loop serves them all: it reads the store's change log
//! ([`crate::store::revisions`]) after the last revision it reported, and the registry's change
//! broadcast only wakes it up, so a lagging watcher misses nothing the log still holds.
//!
//! - From revision 0: every current object as ADDED, each event carrying the revision the
//!   listing is current as of (the object its own), then every change.
//! - From revision R > 0: every object changed after R, once per read of the log, in its current
//!   state, typed by what happened since R (ADDED if created after R, DELETED if gone, else
//!   MODIFIED), in the order of their last change; then every change. Intermediate states are
//!   not replayed (the log holds keys, not old values).
//! - Status changes (VIPs, switch-LB rules) are changes like any other: they have revisions of
//!   their own ([`crate::store::Store::log_status`]) and come as MODIFIED; the event carries the
//!   status change's revision, the object its own (which only spec changes move, as it is the
//!   precondition of updates and deletes). A subnet's usage counts are derived from its VIPs
//!   and pods, which are watched: they are not events.
//! - R older than the log holds, or newer than the current revision: OUT_OF_RANGE, as etcd
//!   answers a compacted revision (Kubernetes: 410 Gone, "too old resource version"). The same
//!   ends a stream whose reader fell more than the log's retention behind.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;

use super::proto::v1 as pb;
use super::services::Api;
use crate::store::{ChangeType, Kind, OutOfRange};

/// What one watch reports: which objects, and how an event is made.
pub(super) trait WatchKind: Send + Sync + 'static {
    type Event: Send + 'static;
    const KIND: Kind;
    /// The keys (names; `namespace/name` for pods) of every current object.
    fn keys(api: &Api) -> Vec<String>;
    /// The event of the change at `revision` for an object that exists (its own revision is
    /// `object_revision`), or `None` when it does not (any more).
    fn event(
        api: &Api,
        event_type: pb::EventType,
        key: &str,
        object_revision: u64,
        revision: u64,
    ) -> Option<Self::Event>;
    /// The event for a deleted object.
    fn deleted(key: &str, revision: u64) -> Self::Event;
}

fn out_of_range(error: OutOfRange) -> Status {
    Status::out_of_range(format!("revision: {error}"))
}

/// Starts a watch of `W` after `since` for the keys `keep` accepts. A `since` the change log
/// cannot serve is refused here, before the stream starts.
pub(super) fn start<W: WatchKind>(
    api: &Api,
    since: u64,
    keep: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> Result<mpsc::Receiver<Result<W::Event, Status>>, Status> {
    // Subscribe before reading anything, so no change falls in between.
    let mut wakeups = api.registry.subscribe();
    let mut status_wakeups = api.registry.subscribe_status();
    if since != 0 {
        api.registry
            .store()
            .changes_since(since)
            .map_err(|error| Status::unavailable(error.to_string()))?
            .map_err(out_of_range)?;
    }
    let (sender, receiver) = mpsc::channel(256);
    let api = api.clone();
    tokio::spawn(async move {
        // What this watcher was told each key's revision is, so the initial listing and the
        // log it then follows do not report one change twice.
        let mut told: HashMap<String, u64> = HashMap::new();
        let mut cursor = since;
        if since == 0 {
            cursor = api.registry.store().revision();
            for key in W::keys(&api).into_iter().filter(|key| keep(key)) {
                let revision = api.registry.revision(W::KIND, &key);
                // The listing is current as of `cursor`: its events carry it, so resuming after
                // the last one misses nothing and repeats nothing it showed.
                if let Some(event) = W::event(&api, pb::EventType::Added, &key, revision, cursor) {
                    told.insert(key, revision);
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        }
        loop {
            let (changes, current) = match api.registry.store().changes_since(cursor) {
                Ok(Ok(read)) => read,
                Ok(Err(too_old)) => {
                    let _ = sender.send(Err(out_of_range(too_old))).await;
                    return;
                }
                Err(error) => {
                    let _ = sender.send(Err(Status::unavailable(error.to_string()))).await;
                    return;
                }
            };
            // Per key: the first change after the cursor and the last one.
            let mut per_key: HashMap<String, (ChangeType, ChangeType, u64)> = HashMap::new();
            for change in changes
                .into_iter()
                .filter(|change| change.kind == W::KIND && keep(&change.key))
            {
                per_key
                    .entry(change.key)
                    .and_modify(|(_, last, revision)| {
                        *last = change.change;
                        *revision = change.revision;
                    })
                    .or_insert((change.change, change.change, change.revision));
            }
            // In the order of their last change (a bulk status change gives many keys one
            // revision: then by key).
            let ordered: BTreeMap<(u64, String), (ChangeType, ChangeType)> = per_key
                .into_iter()
                .map(|(key, (first, last, revision))| ((revision, key), (first, last)))
                .collect();
            for ((revision, key), (first, last)) in ordered {
                if told.get(&key).is_some_and(|told| *told >= revision) {
                    continue;
                }
                let object_revision = api.registry.revision(W::KIND, &key);
                let event = if last == ChangeType::Deleted {
                    told.remove(&key);
                    Some(W::deleted(&key, revision))
                } else if object_revision > revision {
                    // Its spec changed again after `current`: the next read reports it.
                    None
                } else {
                    let event_type = if first == ChangeType::Added {
                        pb::EventType::Added
                    } else {
                        pb::EventType::Modified
                    };
                    told.insert(key.clone(), revision);
                    W::event(&api, event_type, &key, object_revision, revision)
                };
                if let Some(event) = event {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            cursor = current;
            // Wait for the next change of any kind (stored or status: both are in the logs
            // `changes_since` reads); a lagged receiver just reads the logs again.
            let received = tokio::select! {
                _ = api.shutdown.cancelled() => return,
                _ = sender.closed() => return,
                received = wakeups.recv() => received,
                received = status_wakeups.recv() => received,
            };
            if let Err(RecvError::Closed) = received {
                return;
            }
        }
    });
    Ok(receiver)
}

/// Subnets.
pub(super) struct Subnets;

impl WatchKind for Subnets {
    type Event = pb::SubnetEvent;
    const KIND: Kind = Kind::Subnet;

    fn keys(api: &Api) -> Vec<String> {
        api.registry
            .list_subnets()
            .into_iter()
            .map(|(subnet, _)| subnet.name)
            .collect()
    }

    fn event(
        api: &Api,
        event_type: pb::EventType,
        key: &str,
        object_revision: u64,
        revision: u64,
    ) -> Option<pb::SubnetEvent> {
        let mut subnet = api.subnet_proto(key).ok()?;
        subnet.revision = object_revision;
        Some(pb::SubnetEvent {
            r#type: event_type as i32,
            subnet: Some(subnet),
            revision,
        })
    }

    fn deleted(key: &str, revision: u64) -> pb::SubnetEvent {
        pb::SubnetEvent {
            r#type: pb::EventType::Deleted as i32,
            subnet: Some(pb::Subnet {
                name: key.to_string(),
                revision,
                ..Default::default()
            }),
            revision,
        }
    }
}

/// VIPs; their status changes come as MODIFIED with revisions of their own.
pub(super) struct Vips;

impl WatchKind for Vips {
    type Event = pb::VipEvent;
    const KIND: Kind = Kind::Vip;

    fn keys(api: &Api) -> Vec<String> {
        api.registry.list_vips().into_iter().map(|vip| vip.spec.name).collect()
    }

    fn event(
        api: &Api,
        event_type: pb::EventType,
        key: &str,
        object_revision: u64,
        revision: u64,
    ) -> Option<pb::VipEvent> {
        let vip = api.registry.get_vip(key).ok()?;
        Some(pb::VipEvent {
            r#type: event_type as i32,
            vip: Some(api.vip_proto_at(&vip, object_revision)),
            revision,
        })
    }

    fn deleted(key: &str, revision: u64) -> pb::VipEvent {
        pb::VipEvent {
            r#type: pb::vip_event::Type::Deleted as i32,
            vip: Some(pb::Vip {
                name: key.to_string(),
                revision,
                ..Default::default()
            }),
            revision,
        }
    }
}

/// Pods, keyed `namespace/name`.
pub(super) struct Pods;

impl WatchKind for Pods {
    type Event = pb::PodEvent;
    const KIND: Kind = Kind::Pod;

    fn keys(api: &Api) -> Vec<String> {
        api.registry
            .list_pods()
            .into_iter()
            .map(|pod| pod.key().to_string())
            .collect()
    }

    fn event(
        api: &Api,
        event_type: pb::EventType,
        key: &str,
        object_revision: u64,
        revision: u64,
    ) -> Option<pb::PodEvent> {
        let (namespace, name) = key.split_once('/')?;
        let pod = api
            .registry
            .get_pod(&crate::model::PodRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .ok()?;
        Some(pb::PodEvent {
            r#type: event_type as i32,
            pod: Some(api.pod_proto_at(&pod, object_revision)),
            revision,
        })
    }

    fn deleted(key: &str, revision: u64) -> pb::PodEvent {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        pb::PodEvent {
            r#type: pb::EventType::Deleted as i32,
            pod: Some(pb::Pod {
                namespace: namespace.to_string(),
                name: name.to_string(),
                revision,
                ..Default::default()
            }),
            revision,
        }
    }
}

/// Switch-LB rules.
pub(super) struct SwitchLbRules;

impl WatchKind for SwitchLbRules {
    type Event = pb::SwitchLbRuleEvent;
    const KIND: Kind = Kind::SwitchLbRule;

    fn keys(api: &Api) -> Vec<String> {
        api.registry
            .list_switch_lb_rules()
            .into_iter()
            .map(|rule| rule.name)
            .collect()
    }

    fn event(
        api: &Api,
        event_type: pb::EventType,
        key: &str,
        object_revision: u64,
        revision: u64,
    ) -> Option<pb::SwitchLbRuleEvent> {
        let rule = api.registry.get_switch_lb_rule(key).ok()?;
        Some(pb::SwitchLbRuleEvent {
            r#type: event_type as i32,
            rule: Some(api.rule_proto_at(&rule, object_revision)),
            revision,
        })
    }

    fn deleted(key: &str, revision: u64) -> pb::SwitchLbRuleEvent {
        pb::SwitchLbRuleEvent {
            r#type: pb::EventType::Deleted as i32,
            rule: Some(pb::SwitchLbRule {
                name: key.to_string(),
                revision,
                ..Default::default()
            }),
            revision,
        }
    }
}
