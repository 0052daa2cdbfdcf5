//! The four services, each a thin layer over the registry.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::paging;
use super::proto::v1 as pb;
use super::update;
use crate::model::aap_parents;
use crate::model::{PodRef, Vip};
use crate::registry::{Change, Registry, RegistryError};

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

    fn subnet_proto(&self, name: &str) -> Result<pb::Subnet, Status> {
        let (subnet, usage) = self.registry.get_subnet(name)?;
        let gateways = self.registry.subnet_gateways();
        let (gateway_v4, gateway_v6) = gateways.get(name).map(|(_, v4, v6)| (*v4, *v6)).unwrap_or((None, None));
        Ok(convert::subnet_to_proto(&subnet, usage, (gateway_v4, gateway_v6)))
    }

    fn vip_proto(&self, vip: &Vip) -> pb::Vip {
        let parents = if vip.is_aap() {
            aap_parents(vip, &self.registry.pods_naming_aap(&vip.spec.name))
        } else {
            Vec::new()
        };
        convert::vip_to_proto(vip, parents)
    }
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
        let (existing, _) = self.registry.get_subnet(&requested.name)?;
        let merged = update::merge_subnet(self.subnet_proto(&requested.name)?, requested, request.update_mask)?;
        let parsed = convert::subnet_from_proto(merged)?;
        let updated = crate::model::Subnet {
            exclude_ips: parsed.exclude_ips,
            strategy: parsed.strategy,
            ..existing
        };
        let updated = self.registry.update_subnet(updated).await.map_err(under("subnet"))?;
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
        let (subnets, more) = self.registry.subnets_page(first(&page.after), page.size, |_| true);
        let next_page_token = match subnets.last() {
            Some((last, _)) if more => paging::token("subnets", &[], &[&last.name]),
            _ => String::new(),
        };
        let gateways = self.registry.subnet_gateways();
        let subnets = subnets
            .into_iter()
            .map(|(subnet, usage)| {
                let (v4, v6) = gateways
                    .get(&subnet.name)
                    .map(|(_, v4, v6)| (*v4, *v6))
                    .unwrap_or((None, None));
                convert::subnet_to_proto(&subnet, usage, (v4, v6))
            })
            .collect();
        Ok(Response::new(pb::ListSubnetsResponse {
            subnets,
            next_page_token,
        }))
    }

    async fn delete_subnet(
        &self,
        request: Request<pb::DeleteSubnetRequest>,
    ) -> Result<Response<pb::DeleteSubnetResponse>, Status> {
        self.writable()?;
        self.registry.delete_subnet(&named(request).name).await?;
        Ok(Response::new(pb::DeleteSubnetResponse {}))
    }
}

type VipEventStream = Pin<Box<dyn Stream<Item = Result<pb::VipEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::vip_service_server::VipService for Api {
    async fn create_vip(&self, request: Request<pb::CreateVipRequest>) -> Result<Response<pb::Vip>, Status> {
        self.writable()?;
        let spec = convert::vip_spec_from_proto(required(named(request).vip, "vip")?)?;
        let vip = self.registry.create_vip(spec).await.map_err(under("vip"))?;
        Ok(Response::new(self.vip_proto(&vip)))
    }

    async fn update_vip(&self, request: Request<pb::UpdateVipRequest>) -> Result<Response<pb::Vip>, Status> {
        self.writable()?;
        let request = named(request);
        let requested = required(request.vip, "vip")?;
        let existing = self.registry.get_vip(&requested.name)?;
        let merged = update::merge_vip(self.vip_proto(&existing), requested, request.update_mask)?;
        let parsed = convert::vip_spec_from_proto(merged)?;
        let spec = crate::model::VipSpec {
            namespace: parsed.namespace,
            selector: parsed.selector,
            ..existing.spec
        };
        let vip = self.registry.update_vip(spec).await.map_err(under("vip"))?;
        Ok(Response::new(self.vip_proto(&vip)))
    }

    async fn get_vip(&self, request: Request<pb::GetVipRequest>) -> Result<Response<pb::Vip>, Status> {
        let vip = self.registry.get_vip(&named(request).name)?;
        Ok(Response::new(self.vip_proto(&vip)))
    }

    async fn list_vips(&self, request: Request<pb::ListVipsRequest>) -> Result<Response<pb::ListVipsResponse>, Status> {
        let filter = request.into_inner();
        let filters = [filter.subnet.as_str(), filter.namespace.as_str()];
        let page = paging::parse("vips", &filters, 1, filter.page_size, &filter.page_token)?;
        let (vips, more) = self.registry.vips_page(first(&page.after), page.size, |vip| {
            (filter.subnet.is_empty() || vip.spec.subnet == filter.subnet)
                && (filter.namespace.is_empty() || vip.spec.namespace == filter.namespace)
        });
        let next_page_token = match vips.last() {
            Some(last) if more => paging::token("vips", &filters, &[&last.spec.name]),
            _ => String::new(),
        };
        let vips = vips.iter().map(|vip| self.vip_proto(vip)).collect();
        Ok(Response::new(pb::ListVipsResponse { vips, next_page_token }))
    }

    async fn delete_vip(
        &self,
        request: Request<pb::DeleteVipRequest>,
    ) -> Result<Response<pb::DeleteVipResponse>, Status> {
        self.writable()?;
        self.registry.delete_vip(&named(request).name).await?;
        Ok(Response::new(pb::DeleteVipResponse {}))
    }

    type WatchVipsStream = VipEventStream;

    async fn watch_vips(&self, request: Request<pb::WatchVipsRequest>) -> Result<Response<VipEventStream>, Status> {
        let name = named(request).name;
        // Subscribe before reading the current state, so no change falls in between.
        let mut changes = self.registry.subscribe();
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let api = self.clone();
        tokio::spawn(async move {
            let mut known = std::collections::BTreeSet::new();
            for vip in api.registry.list_vips() {
                if name.is_empty() || vip.spec.name == name {
                    known.insert(vip.spec.name.clone());
                    let event = pb::VipEvent {
                        r#type: pb::vip_event::Type::Added as i32,
                        vip: Some(api.vip_proto(&vip)),
                    };
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let received = tokio::select! {
                    _ = api.shutdown.cancelled() => return,
                    received = changes.recv() => received,
                };
                let changed = match received {
                    Ok(Change::Vip(changed)) | Ok(Change::VipStatus(changed)) => vec![changed],
                    // A pod change can move AAP parents: report every VIP it names.
                    Ok(Change::Pod(_)) | Ok(Change::SwitchLbRule(_)) | Ok(Change::Subnet(_)) => continue,
                    Err(RecvError::Lagged(_)) => {
                        api.registry.list_vips().into_iter().map(|vip| vip.spec.name).collect()
                    }
                    Err(RecvError::Closed) => return,
                };
                for vip_name in changed {
                    if !name.is_empty() && vip_name != name {
                        continue;
                    }
                    let event = match api.registry.get_vip(&vip_name) {
                        Ok(vip) => pb::VipEvent {
                            r#type: if known.insert(vip_name.clone()) {
                                pb::vip_event::Type::Added as i32
                            } else {
                                pb::vip_event::Type::Modified as i32
                            },
                            vip: Some(api.vip_proto(&vip)),
                        },
                        Err(_) if known.remove(&vip_name) => pb::VipEvent {
                            r#type: pb::vip_event::Type::Deleted as i32,
                            vip: Some(pb::Vip {
                                name: vip_name.clone(),
                                ..Default::default()
                            }),
                        },
                        Err(_) => continue,
                    };
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

#[tonic::async_trait]
impl pb::pod_service_server::PodService for Api {
    async fn bind_pod(&self, request: Request<pb::BindPodRequest>) -> Result<Response<pb::Pod>, Status> {
        self.writable()?;
        let spec = convert::pod_spec_from_proto(named(request))?;
        let pod = self.registry.bind_pod(spec).await?;
        Ok(Response::new(convert::pod_to_proto(
            &pod,
            &self.registry.subnet_gateways(),
        )))
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
        let found = self.registry.unbind_pod(&key, request.owner_gone, interface).await?;
        Ok(Response::new(pb::UnbindPodResponse { found }))
    }

    async fn get_pod(&self, request: Request<pb::GetPodRequest>) -> Result<Response<pb::Pod>, Status> {
        let request = named(request);
        let pod = self.registry.get_pod(&PodRef {
            namespace: request.namespace,
            name: request.name,
        })?;
        Ok(Response::new(convert::pod_to_proto(
            &pod,
            &self.registry.subnet_gateways(),
        )))
    }

    async fn list_pods(&self, request: Request<pb::ListPodsRequest>) -> Result<Response<pb::ListPodsResponse>, Status> {
        let request = request.into_inner();
        let namespace = request.namespace;
        let page = paging::parse("pods", &[&namespace], 2, request.page_size, &request.page_token)?;
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
            Some(last) if more => paging::token("pods", &[&namespace], &[&last.spec.namespace, &last.spec.name]),
            _ => String::new(),
        };
        let gateways = self.registry.subnet_gateways();
        let pods = pods.iter().map(|pod| convert::pod_to_proto(pod, &gateways)).collect();
        Ok(Response::new(pb::ListPodsResponse { pods, next_page_token }))
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
        Ok(Response::new(convert::rule_to_proto(
            &rule,
            &self.registry.rule_status(&rule.name),
        )))
    }

    async fn update_switch_lb_rule(
        &self,
        request: Request<pb::UpdateSwitchLbRuleRequest>,
    ) -> Result<Response<pb::SwitchLbRule>, Status> {
        self.writable()?;
        let rule = convert::rule_from_proto(required(named(request).rule, "rule")?)?;
        let rule = self.registry.put_switch_lb_rule(rule, true).await?;
        Ok(Response::new(convert::rule_to_proto(
            &rule,
            &self.registry.rule_status(&rule.name),
        )))
    }

    async fn get_switch_lb_rule(
        &self,
        request: Request<pb::GetSwitchLbRuleRequest>,
    ) -> Result<Response<pb::SwitchLbRule>, Status> {
        let rule = self.registry.get_switch_lb_rule(&named(request).name)?;
        Ok(Response::new(convert::rule_to_proto(
            &rule,
            &self.registry.rule_status(&rule.name),
        )))
    }

    async fn list_switch_lb_rules(
        &self,
        request: Request<pb::ListSwitchLbRulesRequest>,
    ) -> Result<Response<pb::ListSwitchLbRulesResponse>, Status> {
        let request = request.into_inner();
        let page = paging::parse("switch-lb-rules", &[], 1, request.page_size, &request.page_token)?;
        let (rules, more) = self
            .registry
            .switch_lb_rules_page(first(&page.after), page.size, |_| true);
        let next_page_token = match rules.last() {
            Some(last) if more => paging::token("switch-lb-rules", &[], &[&last.name]),
            _ => String::new(),
        };
        let rules = rules
            .iter()
            .map(|rule| convert::rule_to_proto(rule, &self.registry.rule_status(&rule.name)))
            .collect();
        Ok(Response::new(pb::ListSwitchLbRulesResponse { rules, next_page_token }))
    }

    async fn delete_switch_lb_rule(
        &self,
        request: Request<pb::DeleteSwitchLbRuleRequest>,
    ) -> Result<Response<pb::DeleteSwitchLbRuleResponse>, Status> {
        self.writable()?;
        self.registry.delete_switch_lb_rule(&named(request).name).await?;
        Ok(Response::new(pb::DeleteSwitchLbRuleResponse {}))
    }
}
