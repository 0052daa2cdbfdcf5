//! Updates with field masks (AIP-134): which fields a request changes, and which it may.
//!
//! A mask is read in one of three ways: absent (or empty), the fields the request sets
//! (AIP-134's implied mask); `"*"`, every field; or its paths. Only mutable fields change. An
//! explicit path naming an immutable field is INVALID_ARGUMENT (field `update_mask`), and so is
//! an unknown path; with the implied mask or `"*"`, an immutable field the request sets must
//! equal the object's current value (INVALID_ARGUMENT naming that field otherwise), so that an
//! object read with Get can be sent back whole.

use std::net::IpAddr;

use prost_types::FieldMask;
use tonic::Status;

use super::error::Violations;
use super::proto::v1 as pb;

/// How a request's mask reads.
enum Mask {
    /// Absent or empty: the fields the request sets.
    Implied,
    /// `"*"`: every field.
    All,
    /// The given paths.
    Paths(Vec<String>),
}

fn read(mask: Option<FieldMask>) -> Mask {
    match mask {
        None => Mask::Implied,
        Some(mask) if mask.paths.is_empty() => Mask::Implied,
        Some(mask) if mask.paths.len() == 1 && mask.paths[0] == "*" => Mask::All,
        Some(mask) => Mask::Paths(mask.paths),
    }
}

/// One field of a message as an update sees it.
struct Field<'a> {
    /// Its name in the proto (and in update_mask paths).
    name: &'static str,
    mutable: bool,
    /// Whether the request sets it (non-default).
    set: bool,
    /// The request's value and the object's current value, compared for immutable fields.
    requested: String,
    current: String,
    /// Where the request's message sits, for violations: "vip" or "subnet".
    message: &'a str,
}

/// The same address, network or MAC whatever its spelling ("fd00::1" and "fd00:0::1").
fn normal(text: &str) -> String {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return ip.to_string();
    }
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return net.to_string();
    }
    text.to_ascii_lowercase()
}

/// The mutable fields the update changes, or INVALID_ARGUMENT for a path that is unknown or
/// immutable, or (implied mask, `"*"`) an immutable field set to another value.
fn mutable_paths(fields: &[Field<'_>], mask: Option<FieldMask>) -> Result<Vec<&'static str>, Status> {
    let mut violations = Violations::new();
    let mut paths = Vec::new();
    let compare = |field: &Field<'_>, violations: &mut Violations| {
        if field.set && normal(&field.requested) != normal(&field.current) {
            violations.add(
                format!("{}.{}", field.message, field.name),
                format!("is immutable: it is {:?}, not {:?}", field.current, field.requested),
            );
        }
    };
    match read(mask) {
        Mask::Implied => {
            for field in fields {
                if field.mutable && field.set {
                    paths.push(field.name);
                } else if !field.mutable {
                    compare(field, &mut violations);
                }
            }
        }
        Mask::All => {
            for field in fields {
                if field.mutable {
                    paths.push(field.name);
                } else {
                    compare(field, &mut violations);
                }
            }
        }
        Mask::Paths(given) => {
            for path in &given {
                match fields.iter().find(|field| field.name == path) {
                    Some(field) if field.mutable => paths.push(field.name),
                    Some(field) => violations.add(
                        format!("{}.{}", field.message, field.name),
                        "is immutable and cannot be updated (named in update_mask)",
                    ),
                    // Output-only fields in a mask are ignored (AIP-134).
                    // So is `revision`: it is the update's precondition, not a change.
                    None if path == "status" || path.starts_with("status.") || path == "revision" => {}
                    None => violations.add(
                        "update_mask",
                        format!(
                            "{path:?} is not a field of {}",
                            fields.first().map_or("", |field| field.message)
                        ),
                    ),
                }
            }
        }
    }
    violations.into_result()?;
    Ok(paths)
}

fn field<'a>(message: &'a str, name: &'static str, mutable: bool, requested: &str, current: &str) -> Field<'a> {
    Field {
        name,
        mutable,
        set: !requested.is_empty(),
        requested: requested.to_string(),
        current: current.to_string(),
        message,
    }
}

/// The VIP `current` (as Get shows it) with the fields of `request` that `mask` changes:
/// `namespace`, `selector` and `selector_labels` (one field: either path replaces both).
/// `current.status` holds the reserved addresses and MAC the immutable fields are compared with.
pub fn merge_vip(current: pb::Vip, request: pb::Vip, mask: Option<FieldMask>) -> Result<pb::Vip, Status> {
    let status = current.status.clone().unwrap_or_default();
    let or = |spec: &str, reserved: &str| {
        if spec.is_empty() {
            reserved.to_string()
        } else {
            spec.to_string()
        }
    };
    let selector_set = !request.selector.is_empty() || !request.selector_labels.is_empty();
    let mut fields = vec![
        field("vip", "namespace", true, &request.namespace, &current.namespace),
        Field {
            set: selector_set,
            ..field("vip", "selector", true, "", "")
        },
        Field {
            set: selector_set,
            ..field("vip", "selector_labels", true, "", "")
        },
        field("vip", "subnet", false, &request.subnet, &current.subnet),
        field("vip", "type", false, &request.r#type, &current.r#type),
        field("vip", "v4ip", false, &request.v4ip, &or(&current.v4ip, &status.v4ip)),
        field("vip", "v6ip", false, &request.v6ip, &or(&current.v6ip, &status.v6ip)),
        field(
            "vip",
            "mac_address",
            false,
            &request.mac_address,
            &or(&current.mac_address, &status.mac),
        ),
    ];
    // A switch_lb_vip's status MAC is the router port's, not its own generated one, so there is
    // nothing to compare a sent-back MAC with: not compared (an explicit path is still refused).
    if current.r#type == "switch_lb_vip" && current.mac_address.is_empty() {
        for field in fields.iter_mut().filter(|field| field.name == "mac_address") {
            field.set = false;
        }
    }
    let paths = mutable_paths(&fields, mask)?;
    let mut merged = pb::Vip {
        status: None,
        ..current
    };
    for path in paths {
        match path {
            "namespace" => merged.namespace = request.namespace.clone(),
            "selector" | "selector_labels" => {
                merged.selector = request.selector.clone();
                merged.selector_labels = request.selector_labels.clone();
            }
            _ => {}
        }
    }
    Ok(merged)
}

/// The subnet `current` (as Get shows it, with its effective gateways) with the fields of
/// `request` that `mask` changes: `exclude_ips` and `strategy`.
pub fn merge_subnet(current: pb::Subnet, request: pb::Subnet, mask: Option<FieldMask>) -> Result<pb::Subnet, Status> {
    let fields = vec![
        Field {
            set: !request.exclude_ips.is_empty(),
            ..field("subnet", "exclude_ips", true, "", "")
        },
        Field {
            set: request.strategy != 0,
            ..field("subnet", "strategy", true, "", "")
        },
        field(
            "subnet",
            "logical_switch",
            false,
            &request.logical_switch,
            &current.logical_switch,
        ),
        field("subnet", "cidr_v4", false, &request.cidr_v4, &current.cidr_v4),
        field("subnet", "cidr_v6", false, &request.cidr_v6, &current.cidr_v6),
        field("subnet", "gateway_v4", false, &request.gateway_v4, &current.gateway_v4),
        field("subnet", "gateway_v6", false, &request.gateway_v6, &current.gateway_v6),
        field("subnet", "vpc", false, &request.vpc, &current.vpc),
    ];
    let paths = mutable_paths(&fields, mask)?;
    let mut merged = pb::Subnet {
        status: None,
        ..current
    };
    for path in paths {
        match path {
            "exclude_ips" => merged.exclude_ips = request.exclude_ips.clone(),
            "strategy" => merged.strategy = request.strategy,
            _ => {}
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> pb::Vip {
        pb::Vip {
            name: "vip-aap".into(),
            namespace: "default".into(),
            subnet: "ovn-default".into(),
            selector: vec!["app: aap1".into()],
            status: Some(pb::VipStatus {
                v4ip: "10.16.0.5".into(),
                v6ip: "fd00::5".into(),
                mac: "00:00:00:aa:bb:cc".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn paths(paths: &[&str]) -> Option<FieldMask> {
        Some(FieldMask {
            paths: paths.iter().map(|path| path.to_string()).collect(),
        })
    }

    #[test]
    fn an_explicit_immutable_or_unknown_path_is_refused_and_status_is_ignored() {
        for (path, fragment) in [
            // The violation names the field itself (its BadRequest field path), not the mask.
            ("v4ip", "vip.v4ip: is immutable"),
            ("subnet", "vip.subnet"),
            ("colour", "colour"),
        ] {
            let error = merge_vip(current(), current(), paths(&[path])).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(
                error.message().contains("update_mask") && error.message().contains(fragment),
                "{error:?}"
            );
        }
        let merged = merge_vip(current(), current(), paths(&["status", "selector"])).expect("status ignored");
        assert_eq!(merged.selector, ["app: aap1"]);
    }

    #[test]
    fn the_implied_mask_accepts_the_reserved_addresses_in_any_spelling_and_refuses_others() {
        let mut request = current();
        request.selector = vec!["app: aap2".into()];
        request.v4ip = "10.16.0.5".into();
        request.v6ip = "fd00:0::5".into();
        request.mac_address = "00:00:00:AA:BB:CC".into();
        let merged = merge_vip(current(), request.clone(), None).expect("same addresses");
        assert_eq!(merged.selector, ["app: aap2"]);
        assert!(merged.v4ip.is_empty(), "the spec stays dynamic");
        request.v4ip = "10.16.0.6".into();
        let error = merge_vip(current(), request, None).unwrap_err();
        assert!(error.message().contains("vip.v4ip"), "{error:?}");
    }

    #[test]
    fn star_replaces_every_mutable_field_even_with_empty() {
        let request = pb::Vip {
            name: "vip-aap".into(),
            ..Default::default()
        };
        let merged = merge_vip(current(), request, paths(&["*"])).expect("*");
        assert!(merged.selector.is_empty() && merged.namespace.is_empty());
        let subnet = pb::Subnet {
            name: "s".into(),
            cidr_v4: "10.16.0.0/16".into(),
            exclude_ips: vec!["10.16.0.2".into()],
            ..Default::default()
        };
        let merged = merge_subnet(
            subnet.clone(),
            pb::Subnet {
                name: "s".into(),
                ..Default::default()
            },
            paths(&["*"]),
        )
        .expect("*");
        assert!(merged.exclude_ips.is_empty() && merged.cidr_v4 == "10.16.0.0/16");
    }
}
