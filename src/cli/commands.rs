//! The commands, over one connection to the daemon.

use std::io::Write;
use tonic::transport::Channel;
use tonic::Code;

use super::apply::{pod_unchanged, rule_unchanged, subnet_unchanged, vip_unchanged, Outcome};
use super::render;
use super::{ApplyRequest, CliError, Kind, Output};
use crate::api::proto::v1 as pb;
use crate::client::{Daemons, Settings};
use pb::pod_service_client::PodServiceClient;
use pb::subnet_service_client::SubnetServiceClient;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use pb::vip_service_client::VipServiceClient;

/// Which objects `get` shows.
#[derive(Debug, Default)]
pub struct Query {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct DeleteOptions {
    pub owner_gone: bool,
    pub ignore_not_found: bool,
}

/// The connection to the daemons; every service client shares it. Reads go to the daemon in
/// use; changes go through [`Daemons::call`], which moves to the active daemon on `UNAVAILABLE`.
pub struct Client {
    daemons: Daemons,
}

impl Client {
    pub async fn connect(settings: Settings) -> Result<Client, CliError> {
        Ok(Client {
            daemons: Daemons::connect(settings).await?,
        })
    }

    fn subnets(&self) -> SubnetServiceClient<Channel> {
        SubnetServiceClient::new(self.daemons.channel())
    }

    fn vips(&self) -> VipServiceClient<Channel> {
        VipServiceClient::new(self.daemons.channel())
    }

    fn pods(&self) -> PodServiceClient<Channel> {
        PodServiceClient::new(self.daemons.channel())
    }

    fn rules(&self) -> SwitchLbRuleServiceClient<Channel> {
        SwitchLbRuleServiceClient::new(self.daemons.channel())
    }

    /// Shows one object, or every object of a kind a page at a time: a table is printed page by
    /// page as the pages arrive (`vipctl get vip` at 100,000 VIPs starts at once and holds one
    /// page in memory); JSON and YAML, one document, are printed after the last page.
    pub async fn get(&mut self, kind: Kind, query: Query, output: Option<Output>) -> Result<(), CliError> {
        let wide = output == Some(Output::Wide);
        let single = query.name.is_some();
        let tabular = matches!(output, Some(Output::Wide) | None);
        let mut printer = render::PagedTable::default();
        let mut objects = Vec::new();
        let mut found = 0usize;
        let mut page_token = String::new();
        loop {
            let (rows, page, next): (render::Rows, Vec<serde_json::Value>, String) = match kind {
                Kind::Vip => {
                    let (vips, next) = match &query.name {
                        Some(name) => {
                            let request = pb::GetVipRequest { name: name.clone() };
                            (vec![self.vips().get_vip(request).await?.into_inner()], String::new())
                        }
                        None => {
                            let request = pb::ListVipsRequest {
                                subnet: query.subnet.clone().unwrap_or_default(),
                                namespace: query.namespace.clone().unwrap_or_default(),
                                page_token: page_token.clone(),
                                ..Default::default()
                            };
                            let response = self.vips().list_vips(request).await?.into_inner();
                            (response.vips, response.next_page_token)
                        }
                    };
                    let objects = if tabular {
                        Vec::new()
                    } else {
                        vips.iter().map(render::vip_object).collect()
                    };
                    (render::vip_rows(&vips, wide), objects, next)
                }
                Kind::Subnet => {
                    let (subnets, next) = match &query.name {
                        Some(name) => {
                            let request = pb::GetSubnetRequest { name: name.clone() };
                            (
                                vec![self.subnets().get_subnet(request).await?.into_inner()],
                                String::new(),
                            )
                        }
                        None => {
                            let request = pb::ListSubnetsRequest {
                                page_token: page_token.clone(),
                                ..Default::default()
                            };
                            let response = self.subnets().list_subnets(request).await?.into_inner();
                            (response.subnets, response.next_page_token)
                        }
                    };
                    let objects = if tabular {
                        Vec::new()
                    } else {
                        subnets.iter().map(render::subnet_object).collect()
                    };
                    (render::subnet_rows(&subnets, wide), objects, next)
                }
                Kind::Slr => {
                    let (rules, next) = match &query.name {
                        Some(name) => {
                            let request = pb::GetSwitchLbRuleRequest { name: name.clone() };
                            (
                                vec![self.rules().get_switch_lb_rule(request).await?.into_inner()],
                                String::new(),
                            )
                        }
                        None => {
                            let request = pb::ListSwitchLbRulesRequest {
                                page_token: page_token.clone(),
                                ..Default::default()
                            };
                            let response = self.rules().list_switch_lb_rules(request).await?.into_inner();
                            (response.rules, response.next_page_token)
                        }
                    };
                    let objects = if tabular {
                        Vec::new()
                    } else {
                        rules.iter().map(render::rule_object).collect()
                    };
                    (render::rule_rows(&rules, wide), objects, next)
                }
                Kind::Pod => {
                    let (pods, next) = match &query.name {
                        Some(name) => {
                            let request = pb::GetPodRequest {
                                namespace: query
                                    .namespace
                                    .clone()
                                    .unwrap_or_else(|| super::manifest::DEFAULT_NAMESPACE.into()),
                                name: name.clone(),
                            };
                            (vec![self.pods().get_pod(request).await?.into_inner()], String::new())
                        }
                        None => {
                            let request = pb::ListPodsRequest {
                                namespace: query.namespace.clone().unwrap_or_default(),
                                page_token: page_token.clone(),
                                ..Default::default()
                            };
                            let response = self.pods().list_pods(request).await?.into_inner();
                            (response.pods, response.next_page_token)
                        }
                    };
                    let objects = if tabular {
                        Vec::new()
                    } else {
                        pods.iter().map(render::pod_object).collect()
                    };
                    (render::pod_rows(&pods, wide), objects, next)
                }
            };
            let (headers, rows) = rows;
            found += rows.len();
            if tabular && !rows.is_empty() {
                emit(&printer.page(&headers, &rows))?;
            }
            objects.extend(page);
            if next.is_empty() {
                break;
            }
            page_token = next;
        }
        let document = |mut objects: Vec<serde_json::Value>| {
            if single && objects.len() == 1 {
                objects.remove(0)
            } else {
                render::list_object(objects)
            }
        };
        match output {
            Some(Output::Json) => {
                let text = serde_json::to_string_pretty(&document(objects))
                    .map_err(|error| CliError::Encode(error.to_string()))?;
                emit(&format!("{text}\n"))
            }
            Some(Output::Yaml) => {
                let text =
                    serde_norway::to_string(&document(objects)).map_err(|error| CliError::Encode(error.to_string()))?;
                emit(&text)
            }
            Some(Output::Wide) | None if found == 0 => {
                eprintln!("No {} found.", kind.plural());
                Ok(())
            }
            Some(Output::Wide) | None => Ok(()),
        }
    }

    /// Applies every request in dependency order (subnets, VIPs, switch-LB rules, pods; file
    /// order within a kind), whatever the file's order, going on after a failure; each outcome
    /// or failure is reported as it happens. What exists and differs is updated where the field
    /// is mutable; an immutable difference is reported with the field and why.
    pub async fn apply(&mut self, mut requests: Vec<ApplyRequest>) -> Result<(), CliError> {
        requests.sort_by_key(dependency_rank);
        let total = requests.len();
        let mut failed = 0;
        for request in requests {
            match self.apply_one(&request).await {
                Ok(outcome) => emit(&format!("{request} {}\n", outcome.as_str()))?,
                Err(error) => {
                    failed += 1;
                    eprintln!("Error: {request}: {error}");
                }
            }
        }
        partial(failed, total)
    }

    async fn apply_one(&mut self, request: &ApplyRequest) -> Result<Outcome, CliError> {
        match request {
            ApplyRequest::Subnet(subnet) => {
                let existing = found(
                    self.subnets()
                        .get_subnet(pb::GetSubnetRequest {
                            name: subnet.name.clone(),
                        })
                        .await,
                )?;
                match existing {
                    Some(existing) if subnet_unchanged(subnet, &existing) => return Ok(Outcome::Unchanged),
                    Some(_) => {
                        // Declarative: the mutable fields become the manifest's ("*"); the daemon
                        // refuses an immutable difference naming the field.
                        let request = pb::UpdateSubnetRequest {
                            subnet: Some(subnet.clone()),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["*".into()],
                            }),
                        };
                        self.daemons
                            .call(request, |channel, request| async move {
                                SubnetServiceClient::new(channel).update_subnet(request).await
                            })
                            .await
                            .map_err(cannot_change)?;
                        return Ok(Outcome::Configured);
                    }
                    None => {}
                }
                let request = pb::CreateSubnetRequest {
                    subnet: Some(subnet.clone()),
                };
                self.daemons
                    .call(request, |channel, request| async move {
                        SubnetServiceClient::new(channel).create_subnet(request).await
                    })
                    .await?;
                Ok(Outcome::Created)
            }
            ApplyRequest::Vip(vip) => {
                let existing = found(self.vips().get_vip(pb::GetVipRequest { name: vip.name.clone() }).await)?;
                match existing {
                    Some(existing) if vip_unchanged(vip, &existing) => return Ok(Outcome::Unchanged),
                    Some(_) => {
                        let request = pb::UpdateVipRequest {
                            vip: Some(vip.clone()),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["*".into()],
                            }),
                        };
                        self.daemons
                            .call(request, |channel, request| async move {
                                VipServiceClient::new(channel).update_vip(request).await
                            })
                            .await
                            .map_err(cannot_change)?;
                        return Ok(Outcome::Configured);
                    }
                    None => {}
                }
                let request = pb::CreateVipRequest { vip: Some(vip.clone()) };
                self.daemons
                    .call(request, |channel, request| async move {
                        VipServiceClient::new(channel).create_vip(request).await
                    })
                    .await?;
                Ok(Outcome::Created)
            }
            ApplyRequest::SwitchLbRule(rule) => {
                let request = pb::GetSwitchLbRuleRequest {
                    name: rule.name.clone(),
                };
                match found(self.rules().get_switch_lb_rule(request).await)? {
                    Some(existing) if rule_unchanged(rule, &existing) => Ok(Outcome::Unchanged),
                    Some(_) => {
                        let request = pb::UpdateSwitchLbRuleRequest {
                            rule: Some(rule.clone()),
                        };
                        self.daemons
                            .call(request, |channel, request| async move {
                                SwitchLbRuleServiceClient::new(channel)
                                    .update_switch_lb_rule(request)
                                    .await
                            })
                            .await?;
                        Ok(Outcome::Configured)
                    }
                    None => {
                        let request = pb::CreateSwitchLbRuleRequest {
                            rule: Some(rule.clone()),
                        };
                        self.daemons
                            .call(request, |channel, request| async move {
                                SwitchLbRuleServiceClient::new(channel)
                                    .create_switch_lb_rule(request)
                                    .await
                            })
                            .await?;
                        Ok(Outcome::Created)
                    }
                }
            }
            ApplyRequest::Pod(pod) => {
                let request = pb::GetPodRequest {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                };
                let existing = found(self.pods().get_pod(request).await)?;
                if existing.is_some_and(|existing| pod_unchanged(pod, &existing)) {
                    return Ok(Outcome::Unchanged);
                }
                self.daemons
                    .call(pod.clone(), |channel, request| async move {
                        PodServiceClient::new(channel).bind_pod(request).await
                    })
                    .await?;
                Ok(Outcome::Bound)
            }
        }
    }

    pub async fn delete(
        &mut self,
        kind: Kind,
        name: &str,
        namespace: &str,
        options: DeleteOptions,
    ) -> Result<(), CliError> {
        let name = name.to_string();
        let result = match kind {
            Kind::Subnet => self
                .daemons
                .call(
                    pb::DeleteSubnetRequest {
                        name: name.clone(),
                        revision: 0,
                    },
                    |channel, request| async move { SubnetServiceClient::new(channel).delete_subnet(request).await },
                )
                .await
                .map(drop),
            Kind::Vip => self
                .daemons
                .call(
                    pb::DeleteVipRequest {
                        name: name.clone(),
                        revision: 0,
                    },
                    |channel, request| async move { VipServiceClient::new(channel).delete_vip(request).await },
                )
                .await
                .map(drop),
            Kind::Slr => self
                .daemons
                .call(
                    pb::DeleteSwitchLbRuleRequest {
                        name: name.clone(),
                        revision: 0,
                    },
                    |channel, request| async move {
                        SwitchLbRuleServiceClient::new(channel)
                            .delete_switch_lb_rule(request)
                            .await
                    },
                )
                .await
                .map(drop),
            Kind::Pod => {
                let request = pb::UnbindPodRequest {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    owner_gone: options.owner_gone,
                    ..Default::default()
                };
                let answer = self
                    .daemons
                    .call(request, |channel, request| async move {
                        PodServiceClient::new(channel).unbind_pod(request).await
                    })
                    .await?;
                if answer.found {
                    Ok(())
                } else {
                    Err(tonic::Status::not_found(format!("pod {namespace}/{name} is not bound")))
                }
            }
        };
        match result {
            Ok(()) => {
                let verb = if kind == Kind::Pod { "unbound" } else { "deleted" };
                emit(&format!("{}/{name} {verb}\n", kind.as_str()))
            }
            Err(status) if status.code() == Code::NotFound && options.ignore_not_found => Ok(()),
            Err(status) => Err(status.into()),
        }
    }

    /// Deletes the objects of a manifest in reverse dependency order (pods, switch-LB rules,
    /// VIPs, subnets; reverse file order within a kind), so what others use goes last.
    pub async fn delete_all(
        &mut self,
        mut requests: Vec<ApplyRequest>,
        options: DeleteOptions,
    ) -> Result<(), CliError> {
        requests.sort_by_key(dependency_rank);
        let total = requests.len();
        let mut failed = 0;
        for request in requests.iter().rev() {
            let namespace = match request {
                ApplyRequest::Pod(pod) => pod.namespace.as_str(),
                _ => "",
            };
            if let Err(error) = self.delete(request.kind(), request.name(), namespace, options).await {
                if error.is_broken_pipe() {
                    return Err(error);
                }
                failed += 1;
                eprintln!("Error: {request}: {error}");
            }
        }
        partial(failed, total)
    }

    /// Prints each event of a watch of `kind` as a line: `TYPE kind/name revision=N ...`, or
    /// with `-o json` one `{"type", "revision", "object"}` per line.
    pub async fn watch(
        &mut self,
        kind: Kind,
        name: Option<String>,
        namespace: &str,
        since: u64,
        output: Option<Output>,
    ) -> Result<(), CliError> {
        let wanted = |key: &str| name.as_deref().is_none_or(|name| name == key);
        // The highest revision printed: where to resume when the daemon ends the stream.
        let mut seen = since;
        match kind {
            Kind::Vip => {
                let request = pb::WatchVipsRequest {
                    name: name.clone().unwrap_or_default(),
                    revision: since,
                };
                let mut events = self.vips().watch_vips(request).await?.into_inner();
                while let Some(event) = events.message().await.map_err(|status| stream_error(status, seen))? {
                    seen = seen.max(event.revision);
                    let vip = event.vip.unwrap_or_default();
                    let status = vip.status.clone().unwrap_or_default();
                    let text = format!(
                        "vip/{} revision={} v4ip={} v6ip={} mac={} ready={} reason={}",
                        vip.name,
                        event.revision,
                        status.v4ip,
                        status.v6ip,
                        status.mac,
                        status.ready,
                        ready_reason(&status.conditions)
                    );
                    print_event(event.r#type, event.revision, &text, || render::vip_object(&vip), output)?;
                }
            }
            Kind::Subnet => {
                let request = pb::WatchRequest { revision: since };
                let mut events = self.subnets().watch_subnets(request).await?.into_inner();
                while let Some(event) = events.message().await.map_err(|status| stream_error(status, seen))? {
                    seen = seen.max(event.revision);
                    let subnet = event.subnet.unwrap_or_default();
                    if !wanted(&subnet.name) {
                        continue;
                    }
                    let text = format!("subnet/{} revision={}", subnet.name, event.revision);
                    print_event(
                        event.r#type,
                        event.revision,
                        &text,
                        || render::subnet_object(&subnet),
                        output,
                    )?;
                }
            }
            Kind::Slr => {
                let request = pb::WatchRequest { revision: since };
                let mut events = self.rules().watch_switch_lb_rules(request).await?.into_inner();
                while let Some(event) = events.message().await.map_err(|status| stream_error(status, seen))? {
                    seen = seen.max(event.revision);
                    let rule = event.rule.unwrap_or_default();
                    if !wanted(&rule.name) {
                        continue;
                    }
                    let status = rule.status.clone().unwrap_or_default();
                    let text = format!(
                        "slr/{} revision={} ready={} reason={}",
                        rule.name,
                        event.revision,
                        status.ready,
                        ready_reason(&status.conditions)
                    );
                    print_event(
                        event.r#type,
                        event.revision,
                        &text,
                        || render::rule_object(&rule),
                        output,
                    )?;
                }
            }
            Kind::Pod => {
                let request = pb::WatchRequest { revision: since };
                let mut events = self.pods().watch_pods(request).await?.into_inner();
                while let Some(event) = events.message().await.map_err(|status| stream_error(status, seen))? {
                    seen = seen.max(event.revision);
                    let pod = event.pod.unwrap_or_default();
                    if name.is_some() && (pod.namespace != namespace || !wanted(&pod.name)) {
                        continue;
                    }
                    let text = format!("pod/{}/{} revision={}", pod.namespace, pod.name, event.revision);
                    print_event(event.r#type, event.revision, &text, || render::pod_object(&pod), output)?;
                }
            }
        }
        // A watch follows until it is stopped: a stream that ends was ended by the daemon
        // (shutdown), and that is an error to say, not a clean exit.
        Err(CliError::Status(Box::new(tonic::Status::unavailable(ended_message(
            seen,
        )))))
    }
}

/// A watch stream's error: the daemon's status as it is, a broken connection with where to
/// resume (not "cannot connect": the watch was connected).
fn stream_error(status: tonic::Status, seen: u64) -> CliError {
    match CliError::from(status) {
        CliError::Connect { reason } => CliError::WatchBroken { reason, resume: seen },
        other => other,
    }
}

/// What vipctl says when the daemon ends a watch: where to resume (the highest revision the
/// stream carried, or the one it started after).
fn ended_message(seen: u64) -> String {
    format!("the daemon ended the watch (it stopped or restarted); watch again with --since {seen}")
}

/// The Ready condition's reason (why an object is or is not ready), `-` when there is none.
fn ready_reason(conditions: &[pb::Condition]) -> &str {
    conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .map(|condition| condition.reason.as_str())
        .filter(|reason| !reason.is_empty())
        .unwrap_or("-")
}

/// One watch event as a line (types as Kubernetes names them).
fn print_event(
    event_type: i32,
    revision: u64,
    text: &str,
    object: impl FnOnce() -> serde_json::Value,
    output: Option<Output>,
) -> Result<(), CliError> {
    let kind = match pb::EventType::try_from(event_type) {
        Ok(pb::EventType::Added) => "ADDED",
        Ok(pb::EventType::Modified) => "MODIFIED",
        Ok(pb::EventType::Deleted) => "DELETED",
        _ => "UNKNOWN",
    };
    let line = if output == Some(Output::Json) {
        let event = serde_json::json!({"type": kind, "revision": revision, "object": object()});
        serde_json::to_string(&event).map_err(|error| CliError::Encode(error.to_string()))?
    } else {
        format!("{kind} {text}")
    };
    emit(&format!("{line}\n"))
}

/// Where a kind goes in `apply`: what an object names comes before it (a VIP names its subnet,
/// a rule its VIP, a pod its subnets and VIPs), as Kubernetes accepts a bundle in any order.
fn dependency_rank(request: &ApplyRequest) -> u8 {
    match request {
        ApplyRequest::Subnet(_) => 0,
        ApplyRequest::Vip(_) => 1,
        ApplyRequest::SwitchLbRule(_) => 2,
        ApplyRequest::Pod(_) => 3,
    }
}

/// An update the daemon refused for an immutable field: said as what cannot change and why.
fn cannot_change(status: tonic::Status) -> tonic::Status {
    if status.code() == Code::InvalidArgument && status.message().contains("immutable") {
        tonic::Status::invalid_argument(format!("cannot change: {}", status.message()))
    } else {
        status
    }
}

/// The object if the daemon has it, `None` on NOT_FOUND.
fn found<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<Option<T>, CliError> {
    match result {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

fn partial(failed: usize, total: usize) -> Result<(), CliError> {
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::Partial { failed, total })
    }
}

/// Writes to standard output and flushes, so a watch shows each event at once.
fn emit(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_watch_names_the_revision_to_resume_from() {
        assert!(ended_message(2215).ends_with("watch again with --since 2215"));
    }

    #[test]
    fn a_broken_watch_says_so_and_where_to_resume() {
        let transport = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed because of a broken pipe");
        let mut status = tonic::Status::unknown("h2 protocol error");
        status.set_source(std::sync::Arc::new(transport));
        let text = stream_error(status, 42).to_string();
        assert!(
            text.starts_with("the connection to the daemon broke during the watch ("),
            "{text}"
        );
        assert!(text.ends_with("watch again with --since 42"), "{text}");
        assert!(!text.contains("cannot connect"), "{text}");
        // A status the daemon sent stays as it is.
        let text = stream_error(tonic::Status::out_of_range("revision 9 is too old"), 3).to_string();
        assert_eq!(text, "OUT_OF_RANGE: revision 9 is too old");
    }

    #[test]
    fn watch_lines_carry_the_ready_reason() {
        let condition = |kind: &str, reason: &str| pb::Condition {
            r#type: kind.into(),
            status: "False".into(),
            reason: reason.into(),
            ..Default::default()
        };
        assert_eq!(
            ready_reason(&[condition("Other", "X"), condition("Ready", "NoRule")]),
            "NoRule"
        );
        assert_eq!(ready_reason(&[]), "-");
        assert_eq!(ready_reason(&[condition("Ready", "")]), "-");
    }
}
