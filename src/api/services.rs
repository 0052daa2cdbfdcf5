//! The four services, each a thin layer over the registry.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::paging;
use super::proto::v1 as pb;
use super::update;
use super::watch;
use crate::model::aap_parents;
use crate::model::{Pod, PodRef, SwitchLbRule, Vip};
use crate::registry::{Registry, RegistryError};
use crate::store::Kind;

/// Shared by every service: the registry behind the API.
#[derive(Clone)]
pub struct Api {
    pub registry: Arc<Registry>,
    /// Ends open Watch streams at shutdown: graceful shutdown waits for every open request.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The daemon's role: a standby refuses mutating calls.
    pub role: crate::role::RoleWatch,
}

impl Api {
    /// Refuses a mutating call on a standby: `UNAVAILABLE`, naming the active daemon in the
    /// response metadata key `ovn-vipd-active` when known, so clients with a list of daemons
    /// try another. Reads are served by every daemon.
    fn writable(&self) -> Result<(), Status> {
        if *self.role.borrow() != crate::role::Role::Standby {
            return Ok(());
        }
        // In standalone mode a standby does not know the active's address (no shared store to
        // publish it in), so the key is absent and clients try the other daemons they know; in
        // clustered mode the cluster database's `Active` row names it.
        let mut status = Status::unavailable(
            "standby: another ovn-vipd daemon holds the NB lock (ovn_vipd) and serves changes; \
             retry on the active daemon",
        );
        if let Some(address) = crate::role::active_address() {
            if let Ok(value) = address.parse() {
                status.metadata_mut().insert(crate::role::ACTIVE_METADATA_KEY, value);
            }
        }
        Err(status)
    }

    /// A subnet with its usage and revision (read first: see [`Registry::revision`]).
    pub(super) fn subnet_proto(&self, name: &str) -> Result<pb::Subnet, Status> {
        let revision = self.registry.revision(Kind::Subnet, name);
        let (subnet, usage) = self.registry.get_subnet(name)?;
        let gateways = self.registry.subnet_gateways();
        let (gateway_v4, gateway_v6) = gateways.get(name).map(|(_, v4, v6)| (*v4, *v6)).unwrap_or((None, None));
        let mut subnet = convert::subnet_to_proto(&subnet, usage, (gateway_v4, gateway_v6));
        subnet.revision = revision;
        Ok(subnet)
    }

    /// A VIP as of `revision` (read before `vip`).
    pub(super) fn vip_proto_at(&self, vip: &Vip, revision: u64) -> pb::Vip {
        let parents = if vip.is_aap() {
            aap_parents(vip, &self.registry.pods_naming_aap(&vip.spec.name))
        } else {
            Vec::new()
        };
        let mut vip = convert::vip_to_proto(vip, parents);
        vip.revision = revision;
        vip
    }

    /// A VIP a mutation answered with, as it left it, and its revision right after.
    fn answered(&self, vip: &Vip) -> pb::Vip {
        let revision = self.registry.revision(Kind::Vip, &vip.spec.name);
        self.vip_proto_at(vip, revision)
    }

    /// The VIP of that name with its revision.
    fn vip_by_name(&self, name: &str) -> Result<pb::Vip, Status> {
        let revision = self.registry.revision(Kind::Vip, name);
        let vip = self.registry.get_vip(name)?;
        Ok(self.vip_proto_at(&vip, revision))
    }

    pub(super) fn pod_proto_at(&self, pod: &Pod, revision: u64) -> pb::Pod {
        let mut pod = convert::pod_to_proto(pod, &self.registry.subnet_gateways());
        pod.revision = revision;
        pod
    }

    pub(super) fn rule_proto_at(&self, rule: &SwitchLbRule, revision: u64) -> pb::SwitchLbRule {
        let mut rule = convert::rule_to_proto(rule, &self.registry.rule_status(&rule.name));
        rule.revision = revision;
        rule
    }

    fn rule_by_name(&self, name: &str) -> Result<pb::SwitchLbRule, Status> {
        let revision = self.registry.revision(Kind::SwitchLbRule, name);
        let rule = self.registry.get_switch_lb_rule(name)?;
        Ok(self.rule_proto_at(&rule, revision))
    }
}

/// A precondition revision from a request: 0 means none.
fn precondition(revision: u64) -> Option<u64> {
    (revision != 0).then_some(revision)
}

fn stream<E: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<Result<E, Status>>,
) -> Pin<Box<dyn Stream<Item = Result<E, Status>> + Send>> {
    Box::pin(ReceiverStream::new(receiver))
}

/// Field violations from below the API name a bare field (`v4ip`); the request names it under
/// its message (`vip.v4ip`), as validation does.
fn under(prefix: &'static str) -> impl Fn(RegistryError) -> RegistryError {
    move |error| match error {
        RegistryError::InvalidArgument { field, message } => RegistryError::InvalidArgument {
            field: format!("{prefix}.{field}"),
            message,
        },
        other => other,
    }
}

/// The object a request is about, recorded in the request's span (see `telemetry::GrpcLayer`).
trait Named {
    fn object(&self) -> String;
}

macro_rules! named_by {
    ($($request:ty => |$value:ident| $name:expr;)*) => {
        $(impl Named for $request {
            fn object(&self) -> String {
                let $value = self;
                $name
            }
        })*
    };
}

named_by! {
    pb::CreateSubnetRequest => |r| r.subnet.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    pb::GetSubnetRequest => |r| r.name.clone();
    pb::UpdateSubnetRequest => |r| r.subnet.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    pb::UpdateVipRequest => |r| r.vip.as_ref().map(|v| v.name.clone()).unwrap_or_default();
    pb::DeleteSubnetRequest => |r| r.name.clone();
    pb::CreateVipRequest => |r| r.vip.as_ref().map(|v| v.name.clone()).unwrap_or_default();
    pb::GetVipRequest => |r| r.name.clone();
    pb::DeleteVipRequest => |r| r.name.clone();
    pb::WatchVipsRequest => |r| r.name.clone();
    pb::WatchRequest => |r| format!("since revision {}", r.revision);
    pb::BindPodRequest => |r| format!("{}/{}", r.namespace, r.name);
    pb::UnbindPodRequest => |r| format!("{}/{}", r.namespace, r.name);
    pb::GetPodRequest => |r| format!("{}/{}", r.namespace, r.name);
    pb::CreateSwitchLbRuleRequest => |r| r.rule.as_ref().map(|rule| rule.name.clone()).unwrap_or_default();
    pb::UpdateSwitchLbRuleRequest => |r| r.rule.as_ref().map(|rule| rule.name.clone()).unwrap_or_default();
    pb::GetSwitchLbRuleRequest => |r| r.name.clone();
    pb::DeleteSwitchLbRuleRequest => |r| r.name.clone();
}

/// The request's message, with its object recorded in the span.
fn named<T: Named>(request: Request<T>) -> T {
    let message = request.into_inner();
    crate::telemetry::record_object(&message.object());
    message
}

/// The key a page starts after, for kinds keyed by name.
fn first(after: &[String]) -> Option<&str> {
    after.first().map(String::as_str)
}

/// The name an update addresses: an empty one is bad input (`InvalidArgument` naming the field,
/// as a create answers), not a lookup that finds nothing.
fn name_given(name: &str, field: &str) -> Result<(), Status> {
    let mut violations = super::error::Violations::new();
    if name.is_empty() {
        violations.add(field, "must not be empty");
    }
    violations.into_result()
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| {
        let mut violations = super::error::Violations::new();
        violations.add(field, "is required");
        violations
            .into_result()
            .err()
            .unwrap_or_else(|| Status::invalid_argument(format!("{field} is required")))
    })
}

#[tonic::async_trait]
impl pb::subnet_service_server::SubnetService for Api {
    async fn create_subnet(&self, request: Request<pb::CreateSubnetRequest>) -> Result<Response<pb::Subnet>, Status> {
        self.writable()?;
        let subnet = convert::subnet_from_proto(required(named(request).subnet, "subnet")?)?;
        let created = self.registry.create_subnet(subnet).await.map_err(under("subnet"))?;
        Ok(Response::new(self.subnet_proto(&created.name)?))
    }

    async fn update_subnet(&self, request: Request<pb::UpdateSubnetRequest>) -> Result<Response<pb::Subnet>, Status> {
        self.writable()?;
        let request = named(request);
        let requested = required(request.subnet, "subnet")?;
        name_given(&requested.name, "subnet.name")?;
        let revision = precondition(requested.revision);
        let (existing, _) = self.registry.get_subnet(&requested.name)?;
        let merged = update::merge_subnet(self.subnet_proto(&requested.name)?, requested, request.update_mask)?;
        let parsed = convert::subnet_from_proto(merged)?;
        let updated = crate::model::Subnet {
            exclude_ips: parsed.exclude_ips,
            strategy: parsed.strategy,
            ..existing
        };
        let updated = self
            .registry
            .update_subnet_at(updated, revision)
            .await
            .map_err(under("subnet"))?;
        Ok(Response::new(self.subnet_proto(&updated.name)?))
    }

    async fn get_subnet(&self, request: Request<pb::GetSubnetRequest>) -> Result<Response<pb::Subnet>, Status> {
        Ok(Response::new(self.subnet_proto(&named(request).name)?))
    }

    async fn list_subnets(
        &self,
        request: Request<pb::ListSubnetsRequest>,
    ) -> Result<Response<pb::ListSubnetsResponse>, Status> {
        let request = request.into_inner();
        let page = paging::parse("subnets", &[], 1, request.page_size, &request.page_token)?;
        // Read before the page: a watch from it replays anything the page may have missed.
        let revision = self.registry.store().revision();
        let (subnets, more) = self.registry.subnets_page(first(&page.after), page.size, |_| true);
        let next_page_token = match subnets.last() {
            Some((last, _, _)) if more => paging::token("subnets", &[], &[&last.name]),
            _ => String::new(),
        };
        let gateways = self.registry.subnet_gateways();
        let subnets = subnets
            .into_iter()
            .map(|(subnet, usage, revision)| {
                let (v4, v6) = gateways
                    .get(&subnet.name)
                    .map(|(_, v4, v6)| (*v4, *v6))
                    .unwrap_or((None, None));
                let mut subnet = convert::subnet_to_proto(&subnet, usage, (v4, v6));
                subnet.revision = revision;
                subnet
            })
            .collect();
        Ok(Response::new(pb::ListSubnetsResponse {
            subnets,
            next_page_token,
            revision,
        }))
    }

    async fn delete_subnet(
        &self,
        request: Request<pb::DeleteSubnetRequest>,
    ) -> Result<Response<pb::DeleteSubnetResponse>, Status> {
        self.writable()?;
        let request = named(request);
        self.registry
            .delete_subnet_at(&request.name, precondition(request.revision))
            .await?;
        Ok(Response::new(pb::DeleteSubnetResponse {}))
    }

    type WatchSubnetsStream = EventStream<pb::SubnetEvent>;

    async fn watch_subnets(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream<pb::SubnetEvent>>, Status> {
        let since = named(request).revision;
        Ok(Response::new(stream(watch::start::<watch::Subnets>(
            self,
            since,
            |_| true,
        )?)))
    }
}

type EventStream<E> = Pin<Box<dyn Stream<Item = Result<E, Status>> + Send>>;

#[tonic::async_trait]
impl pb::vip_service_server::VipService for Api {
    async fn create_vip(&self, request: Request<pb::CreateVipRequest>) -> Result<Response<pb::Vip>, Status> {
        self.writable()?;
        let spec = convert::vip_spec_from_proto(required(named(request).vip, "vip")?)?;
        let vip = self.registry.create_vip(spec).await.map_err(under("vip"))?;
        Ok(Response::new(self.answered(&vip)))
    }

    async fn update_vip(&self, request: Request<pb::UpdateVipRequest>) -> Result<Response<pb::Vip>, Status> {
        self.writable()?;
        let request = named(request);
        let requested = required(request.vip, "vip")?;
        name_given(&requested.name, "vip.name")?;
        let revision = precondition(requested.revision);
        let existing = self.registry.get_vip(&requested.name)?;
        let merged = update::merge_vip(self.vip_proto_at(&existing, 0), requested, request.update_mask)?;
        let parsed = convert::vip_spec_from_proto(merged)?;
        let spec = crate::model::VipSpec {
            namespace: parsed.namespace,
            selector: parsed.selector,
            ..existing.spec
        };
        let vip = self
            .registry
            .update_vip_at(spec, revision)
            .await
            .map_err(under("vip"))?;
        Ok(Response::new(self.answered(&vip)))
    }

    async fn get_vip(&self, request: Request<pb::GetVipRequest>) -> Result<Response<pb::Vip>, Status> {
        Ok(Response::new(self.vip_by_name(&named(request).name)?))
    }

    async fn list_vips(&self, request: Request<pb::ListVipsRequest>) -> Result<Response<pb::ListVipsResponse>, Status> {
        let filter = request.into_inner();
        let filters = [filter.subnet.as_str(), filter.namespace.as_str()];
        let page = paging::parse("vips", &filters, 1, filter.page_size, &filter.page_token)?;
        // Read before the page: a watch from it replays anything the page may have missed.
        let revision = self.registry.store().revision();
        let (vips, more) = self.registry.vips_page(first(&page.after), page.size, |vip| {
            (filter.subnet.is_empty() || vip.spec.subnet == filter.subnet)
                && (filter.namespace.is_empty() || vip.spec.namespace == filter.namespace)
        });
        let next_page_token = match vips.last() {
            Some((last, _)) if more => paging::token("vips", &filters, &[&last.spec.name]),
            _ => String::new(),
        };
        let vips = vips
            .iter()
            .map(|(vip, revision)| self.vip_proto_at(vip, *revision))
            .collect();
        Ok(Response::new(pb::ListVipsResponse {
            vips,
            next_page_token,
            revision,
        }))
    }

    async fn delete_vip(
        &self,
        request: Request<pb::DeleteVipRequest>,
    ) -> Result<Response<pb::DeleteVipResponse>, Status> {
        self.writable()?;
        let request = named(request);
        self.registry
            .delete_vip_at(&request.name, precondition(request.revision))
            .await?;
        Ok(Response::new(pb::DeleteVipResponse {}))
    }

    type WatchVipsStream = EventStream<pb::VipEvent>;

    async fn watch_vips(
        &self,
        request: Request<pb::WatchVipsRequest>,
    ) -> Result<Response<EventStream<pb::VipEvent>>, Status> {
        let request = named(request);
        let name = request.name;
        let receiver = watch::start::<watch::Vips>(self, request.revision, move |key| name.is_empty() || key == name)?;
        Ok(Response::new(stream(receiver)))
    }
}

#[tonic::async_trait]
impl pb::pod_service_server::PodService for Api {
    async fn bind_pod(&self, request: Request<pb::BindPodRequest>) -> Result<Response<pb::Pod>, Status> {
        self.writable()?;
        let spec = convert::pod_spec_from_proto(named(request))?;
        let pod = self.registry.bind_pod(spec).await?;
        let revision = self.registry.revision(Kind::Pod, &pod.key().to_string());
        Ok(Response::new(self.pod_proto_at(&pod, revision)))
    }

    async fn unbind_pod(
        &self,
        request: Request<pb::UnbindPodRequest>,
    ) -> Result<Response<pb::UnbindPodResponse>, Status> {
        self.writable()?;
        let request = named(request);
        let key = PodRef {
            namespace: request.namespace,
            name: request.name,
        };
        let interface = Some(request.interface.as_str()).filter(|interface| !interface.is_empty());
        let found = self
            .registry
            .unbind_pod_at(&key, request.owner_gone, interface, precondition(request.revision))
            .await?;
        Ok(Response::new(pb::UnbindPodResponse { found }))
    }

    async fn get_pod(&self, request: Request<pb::GetPodRequest>) -> Result<Response<pb::Pod>, Status> {
        let request = named(request);
        let key = PodRef {
            namespace: request.namespace,
            name: request.name,
        };
        let revision = self.registry.revision(Kind::Pod, &key.to_string());
        let pod = self.registry.get_pod(&key)?;
        Ok(Response::new(self.pod_proto_at(&pod, revision)))
    }

    async fn list_pods(&self, request: Request<pb::ListPodsRequest>) -> Result<Response<pb::ListPodsResponse>, Status> {
        let request = request.into_inner();
        let namespace = request.namespace;
        let page = paging::parse("pods", &[&namespace], 2, request.page_size, &request.page_token)?;
        // Read before the page: a watch from it replays anything the page may have missed.
        let revision = self.registry.store().revision();
        let after = match page.after.as_slice() {
            [namespace, name] => Some(PodRef {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            _ => None,
        };
        let (pods, more) = self.registry.pods_page(after.as_ref(), page.size, |pod| {
            namespace.is_empty() || pod.spec.namespace == namespace
        });
        let next_page_token = match pods.last() {
            Some((last, _)) if more => paging::token("pods", &[&namespace], &[&last.spec.namespace, &last.spec.name]),
            _ => String::new(),
        };
        let gateways = self.registry.subnet_gateways();
        let pods = pods
            .iter()
            .map(|(pod, revision)| {
                let mut pod = convert::pod_to_proto(pod, &gateways);
                pod.revision = *revision;
                pod
            })
            .collect();
        Ok(Response::new(pb::ListPodsResponse {
            pods,
            next_page_token,
            revision,
        }))
    }

    type WatchPodsStream = EventStream<pb::PodEvent>;

    async fn watch_pods(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream<pb::PodEvent>>, Status> {
        let since = named(request).revision;
        Ok(Response::new(stream(watch::start::<watch::Pods>(self, since, |_| {
            true
        })?)))
    }
}

#[tonic::async_trait]
impl pb::switch_lb_rule_service_server::SwitchLbRuleService for Api {
    async fn create_switch_lb_rule(
        &self,
        request: Request<pb::CreateSwitchLbRuleRequest>,
    ) -> Result<Response<pb::SwitchLbRule>, Status> {
        self.writable()?;
        let rule = convert::rule_from_proto(required(named(request).rule, "rule")?)?;
        let rule = self.registry.put_switch_lb_rule(rule, false).await?;
        let revision = self.registry.revision(Kind::SwitchLbRule, &rule.name);
        Ok(Response::new(self.rule_proto_at(&rule, revision)))
    }

    async fn update_switch_lb_rule(
        &self,
        request: Request<pb::UpdateSwitchLbRuleRequest>,
    ) -> Result<Response<pb::SwitchLbRule>, Status> {
        self.writable()?;
        let requested = required(named(request).rule, "rule")?;
        let revision = precondition(requested.revision);
        let rule = convert::rule_from_proto(requested)?;
        let rule = self.registry.put_switch_lb_rule_at(rule, true, revision).await?;
        let revision = self.registry.revision(Kind::SwitchLbRule, &rule.name);
        Ok(Response::new(self.rule_proto_at(&rule, revision)))
    }

    async fn get_switch_lb_rule(
        &self,
        request: Request<pb::GetSwitchLbRuleRequest>,
    ) -> Result<Response<pb::SwitchLbRule>, Status> {
        Ok(Response::new(self.rule_by_name(&named(request).name)?))
    }

    async fn list_switch_lb_rules(
        &self,
        request: Request<pb::ListSwitchLbRulesRequest>,
    ) -> Result<Response<pb::ListSwitchLbRulesResponse>, Status> {
        let request = request.into_inner();
        let page = paging::parse("switch-lb-rules", &[], 1, request.page_size, &request.page_token)?;
        // Read before the page: a watch from it replays anything the page may have missed.
        let revision = self.registry.store().revision();
        let (rules, more) = self
            .registry
            .switch_lb_rules_page(first(&page.after), page.size, |_| true);
        let next_page_token = match rules.last() {
            Some((last, _)) if more => paging::token("switch-lb-rules", &[], &[&last.name]),
            _ => String::new(),
        };
        let rules = rules
            .iter()
            .map(|(rule, revision)| self.rule_proto_at(rule, *revision))
            .collect();
        Ok(Response::new(pb::ListSwitchLbRulesResponse {
            rules,
            next_page_token,
            revision,
        }))
    }

    async fn delete_switch_lb_rule(
        &self,
        request: Request<pb::DeleteSwitchLbRuleRequest>,
    ) -> Result<Response<pb::DeleteSwitchLbRuleResponse>, Status> {
        self.writable()?;
        let request = named(request);
        self.registry
            .delete_switch_lb_rule_at(&request.name, precondition(request.revision))
            .await?;
        Ok(Response::new(pb::DeleteSwitchLbRuleResponse {}))
    }

    type WatchSwitchLbRulesStream = EventStream<pb::SwitchLbRuleEvent>;

    async fn watch_switch_lb_rules(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream<pb::SwitchLbRuleEvent>>, Status> {
        let since = named(request).revision;
        Ok(Response::new(stream(watch::start::<watch::SwitchLbRules>(
            self,
            since,
            |_| true,
        )?)))
    }
}
