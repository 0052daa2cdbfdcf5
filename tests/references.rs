//! References before their target (the Kubernetes way): a switch-LB rule may name a VIP that
//! does not exist yet, with or without health checks; it is Ready=False, reason VipNotFound,
//! until the VIP appears, then it becomes ready with its load balancer (and, health-checked, its
//! source address and health check) in NB. What is still refused, and why, too. (A VIP naming a
//! subnet that does not exist yet: tests/pending_vips.rs.)

mod common;

use std::time::Duration;

use common::requests::{
    bind_with_vip, create_rule, create_vip, switch_lb_vip, tcp_rule, wait_for_rule_status, Clients,
};
use common::TestDaemon;
use ovn_vipd::api::proto::v1 as pb;
use pb::switch_lb_rule_service_client::SwitchLbRuleServiceClient;
use tonic::Code;

type Rules = SwitchLbRuleServiceClient<tonic::transport::Channel>;

/// Rule `name` on `vip` for pods labelled `app: web`, port 80 → 8080, endpoint 10.16.0.50.
fn rule(name: &str, vip: &str, health_check: bool) -> pb::SwitchLbRule {
    pb::SwitchLbRule {
        endpoints: vec!["10.16.0.50".into()],
        health_check,
        ..tcp_rule(name, vip, "app: web", 80, 8080)
    }
}

/// Waits until the rule's Ready condition has `reason`; returns its status.
async fn rule_reason(rules: &mut Rules, name: &str, reason: &str) -> pb::SwitchLbRuleStatus {
    wait_for_rule_status(rules, name, reason, Duration::from_secs(10), |status| {
        status
            .conditions
            .first()
            .is_some_and(|condition| condition.reason == reason)
    })
    .await
}

fn assert_precondition(error: &tonic::Status, fragment: &str) {
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains(fragment), "{fragment}: {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_naming_a_vip_that_does_not_exist_yet_waits_for_it() {
    let daemon = TestDaemon::start().await;
    let Clients {
        mut subnets,
        mut vips,
        mut pods,
        mut rules,
    } = daemon.clients().await;
    subnets
        .create_subnet(common::subnet_request("ovn-default", "10.16.0.0/16", ""))
        .await
        .unwrap();
    // A router port on the switch, so a switch_lb_vip frontend can be answered for (Ready).
    daemon.nb.nbctl(&[
        "lr-add",
        "router",
        "--",
        "lrp-add",
        "router",
        "router-ovn-default",
        "04:00:00:00:00:01",
        "10.16.0.1/16",
    ]);
    daemon.nb.nbctl(&[
        "lsp-add",
        "ovn-default",
        "ovn-default-router",
        "--",
        "lsp-set-type",
        "ovn-default-router",
        "router",
        "--",
        "lsp-set-addresses",
        "ovn-default-router",
        "router",
        "--",
        "lsp-set-options",
        "ovn-default-router",
        "router-port=router-ovn-default",
    ]);

    // The rule first, as a manifest in file order might have it: accepted, not ready.
    let answered = rules
        .create_switch_lb_rule(create_rule(rule("web", "web-vip", false)))
        .await
        .expect("a rule may name a VIP that does not exist yet")
        .into_inner();
    // The answer itself says why (as CreateVip's does for a pending VIP), not an empty status.
    let answered = answered.status.unwrap_or_default();
    assert_eq!(
        answered
            .conditions
            .first()
            .map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "VipNotFound")),
        "{answered:?}"
    );
    let status = rule_reason(&mut rules, "web", "VipNotFound").await;
    assert!(!status.ready, "{status:?}");
    assert!(status.conditions[0].message.contains("web-vip"), "{status:?}");
    let balancers = daemon.nb.nbctl(&["--bare", "--columns=name", "find", "load_balancer"]);
    assert!(
        !balancers.contains("web"),
        "no load balancer without its frontend: {balancers}"
    );

    // Health checks need a source address in the VIP's subnet: reserved when the VIP gets its
    // addresses, so a health-checked rule waits for its VIP too.
    let mut checked = rule("checked", "web-vip", true);
    checked.ports[0].port = 443;
    rules
        .create_switch_lb_rule(create_rule(checked))
        .await
        .expect("a health-checked rule may name a VIP that does not exist yet");
    rule_reason(&mut rules, "checked", "VipNotFound").await;
    let checks = daemon
        .nb
        .nbctl(&["--bare", "--columns=vip", "list", "load_balancer_health_check"]);
    assert!(checks.trim().is_empty(), "no health check before the VIP: {checks}");

    // The VIP appears: the rule becomes ready, with its frontend in NB.
    let address = vips
        .create_vip(create_vip(switch_lb_vip("web-vip", "ovn-default")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap_or_default()
        .v4ip;
    let status = rule_reason(&mut rules, "web", "Synced").await;
    assert!(
        status.ready && status.vips.iter().any(|vip| vip.starts_with(&address)),
        "{status:?}"
    );
    let balancer_vips = daemon.nb.nbctl(&["--bare", "--columns=vips", "find", "load_balancer"]);
    assert!(balancer_vips.contains(&format!("{address}:80")), "{balancer_vips}");
    // The health-checked rule too, with its health check on the frontend.
    let status = rule_reason(&mut rules, "checked", "Synced").await;
    assert!(status.ready, "{status:?}");
    let checks = daemon
        .nb
        .nbctl(&["--bare", "--columns=vip", "list", "load_balancer_health_check"]);
    assert!(checks.contains(&format!("{address}:443")), "{checks}");

    // A VIP a rule uses cannot be deleted (IN_USE): the rule goes first, as `vipctl delete -f`
    // does in reverse order. So a rule never loses its VIP once it had it.
    let error = vips
        .delete_vip(pb::DeleteVipRequest {
            name: "web-vip".into(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_precondition(&error, "switch-lb rule");

    // A pod's fixed-address VIP must exist: BindPod answers with the address now.
    let error = pods
        .bind_pod(bind_with_vip("default", "early", "ovn-default", "not-yet"))
        .await
        .unwrap_err();
    assert_precondition(&error, "not-yet");
    daemon.stop().await;
}
