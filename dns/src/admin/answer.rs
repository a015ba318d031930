//! `/debug/answer?name=&source=&subnet=`: how the answer to a query for
//! a service name is chosen, explained as JSON. It takes what a DNS query
//! carries — the packet `source` and, optionally, the ECS client `subnet`
//! (`10.1.2.0/24`, `0.0.0.0/0`) — and decides the asker, `export-to`
//! (with `--ecs-trusted-from`) and the ECS scope by the same rules and
//! answer model the DNS answer uses, so what it explains is what that
//! query gets.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use serde_json::{Value, json};

use super::{AdminState, MAX_DEBUG_ANSWER, MAX_DEBUG_NAME, bad};
use crate::authority::answer::{self, Question, TYPE_A, Wants};
use crate::authority::rules::{self, ClientSubnet, Rcode};
use crate::qname::{self, QName};
use crate::select::{self, Gate, Tier};
use crate::snapshot::Kind;

/// `/debug/answer`'s parameters: one `name`, at most one `source` and
/// one `subnet`.
fn answer_params(params: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (key, value) in params {
        if !matches!(key.as_str(), "name" | "source" | "subnet") {
            return Err("unknown parameter (use name, source, subnet)".into());
        }
        if key == "name" && value.len() > MAX_DEBUG_NAME {
            return Err(format!("name: longer than {MAX_DEBUG_NAME} bytes"));
        }
        if out.contains_key(&key) {
            return Err(format!("{key}: one per request"));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// `subnet` as an ECS option would carry it: an address and a source
/// prefix, with no address bit set beyond the prefix (a query with one
/// gets FORMERR, RFC 7871 §6).
fn client_subnet(text: &str) -> Result<ClientSubnet, String> {
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("subnet: {text:?} is not an address/prefix (e.g. 10.1.2.0/24)"))?;
    if net.trunc() != net {
        return Err(format!(
            "subnet: {text:?} has address bits set beyond /{} (a DNS query carrying it gets FORMERR)",
            net.prefix_len()
        ));
    }
    Ok(ClientSubnet {
        address: net.addr(),
        source_prefix: net.prefix_len(),
    })
}

/// Who `export-to` checks, as [`Gate`] says, in words.
fn gate_words(gate: Gate) -> &'static str {
    match gate {
        Gate::Place => "asker",
        Gate::Source(_) => "packet source",
        Gate::Both(_) => "subnet and packet source",
    }
}

pub(super) async fn debug_answer(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let params = match answer_params(params) {
        Ok(params) => params,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let Some(name) = params.get("name") else {
        return bad(
            StatusCode::BAD_REQUEST,
            "name: is required (e.g. ?name=web.shop.global&source=10.1.2.3)".into(),
        );
    };
    let source = match params.get("source").map(|s| s.parse::<IpAddr>()) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("source: {:?} is not an IP address", params["source"]),
            );
        }
    };
    let ecs = match params.get("subnet").map(|s| client_subnet(s)) {
        None => None,
        Some(Ok(subnet)) => Some(subnet),
        Some(Err(e)) => return bad(StatusCode::BAD_REQUEST, e),
    };
    if ecs.is_some() && source.is_none() {
        return bad(
            StatusCode::BAD_REQUEST,
            "subnet: needs a source (the resolver's address: it decides whether the subnet \
             is trusted, and export-to checks it too)"
                .into(),
        );
    }
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let snapshot = state.registry.snapshot();
    let (domain, ns, svc) = match qname::parse(&labels, state.authority.domains()) {
        Some((domain, QName::Service { ns, svc })) => (domain, ns, svc),
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("name: {name:?} is not a <service>.<namespace> name"),
            );
        }
        None => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("name: {name:?} is outside every served domain"),
            );
        }
    };
    let Some(view) = snapshot.service(svc, ns) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!("{name}: no such service (NXDOMAIN)"),
        );
    };
    // The asker and the export-to gate as a DNS query from `source`
    // carrying `subnet` as ECS gets them; without a source, an asker of
    // no known place.
    let authority = &*state.authority;
    let (place, gate) = match source {
        Some(ip) => (
            rules::asker(&snapshot, ip, ecs),
            rules::gate(ip, ecs, authority.ecs_trusted(ip)),
        ),
        None => (None, Gate::Place),
    };
    // The answer model's own verdict on an A query: its rcode (export-to)
    // and the ECS scope the reply would carry.
    let question = Question {
        snapshot: &snapshot,
        authority,
        domain,
        wants: Wants::new(TYPE_A),
        place: place.as_ref(),
        gate,
    };
    let modelled = answer::service(question, Some(view));
    let exported = modelled.rcode != Rcode::NxDomain;
    let ecs_scope = ecs.map(|s| rules::ecs_scope(s, modelled.located, modelled.gated));
    let asker = place
        .as_ref()
        .and_then(|p| snapshot.locality.place(p.cluster))
        .map(|p| {
            json!({
                "cluster": p.name.as_str(),
                "region": p.region.as_ref().map(|r| r.1.as_str()),
                "zone": p.zone.as_ref().map(|z| z.1.as_str()),
                "matched_prefix": place.map(|p| p.prefix),
            })
        });
    let policy = &snapshot.policy;
    let explanation = select::explain(view, place.as_ref(), state.authority.min_healthy, policy);
    let pick = select::select(view, place.as_ref(), state.authority.min_healthy);
    // One more than shown, to tell a full list from a cut one. The rotation
    // (and a weighted sample's origin) of a real answer varies: this is
    // the one of rotation 0.
    let mut answer: Vec<String> = if exported {
        pick.v4(0, MAX_DEBUG_ANSWER + 1)
            .map(|a| a.to_string())
            .collect()
    } else {
        Vec::new()
    };
    if exported {
        answer.extend(
            pick.v6(0, MAX_DEBUG_ANSWER + 1 - answer.len())
                .map(|a| a.to_string()),
        );
    }
    let answer_truncated = answer.len() > MAX_DEBUG_ANSWER;
    answer.truncate(MAX_DEBUG_ANSWER);
    // The weights each cluster's endpoints answer with, and the drains
    // and weight percentages the policy applied to them.
    let total: u128 = view.all.weight(Kind::Targets);
    let weights: Vec<Value> = view
        .clusters
        .iter()
        .take(MAX_DEBUG_ANSWER)
        .map(|part| {
            let whole = part.whole(0);
            let cluster = part.name();
            let weight = whole.weight(Kind::Targets);
            let drain = policy.drain_percent(cluster, &view.key);
            let scale = policy
                .clusters
                .get(cluster)
                .map_or(100, |c| c.weight_percent);
            let service_scale = policy
                .services
                .get(&view.key)
                .and_then(|s| s.weight_percent.get(cluster))
                .copied()
                .unwrap_or(100);
            json!({
                "cluster": cluster.as_str(),
                "healthy": whole.targets.len(),
                "weight": weight,
                "uniform_weight": part.weights.uniform(),
                "share_of_all": if total == 0 { 0.0 } else { weight as f64 / total as f64 },
                "drain_percent": drain,
                "cluster_weight_percent": scale,
                "service_weight_percent": service_scale,
                "last_resort_only": whole.targets.is_empty() && !part.reserve(0).targets.is_empty(),
            })
        })
        .collect();
    // One list per exporting cluster that sets export-to: an asker must
    // be in every one.
    let export_to: Vec<Vec<String>> = view
        .export_to
        .iter()
        .map(|list| list.iter().map(ToString::to_string).collect())
        .collect();
    // Endpoints out of answers because their syncer's health check fails
    // (they are exported not ready), with the reason.
    let failing_checks: Vec<Value> = view
        .clusters
        .iter()
        .flat_map(|part| {
            part.export
                .endpoints()
                .iter()
                .filter(|e| e.health.is_failing())
                .map(move |e| {
                    json!({
                        "cluster": part.name().as_str(),
                        "addresses": e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "health_check": e.health.as_str(),
                    })
                })
        })
        .take(MAX_DEBUG_ANSWER)
        .collect();
    axum::Json(json!({
        "name": name,
        "service": view.key.to_string(),
        "source": source.map(|s| s.to_string()),
        "subnet": params.get("subnet"),
        "subnet_trusted": ecs.and(source).map(|ip| authority.ecs_trusted(ip)),
        "ecs_scope": ecs_scope,
        "asker": asker,
        "affinity": explanation.affinity,
        "min_healthy": explanation.min_healthy,
        "min_healthy_from": explanation.min_healthy_from,
        "tiers": explanation.tiers,
        "chosen": explanation.chosen,
        "chosen_place": explanation.chosen_place,
        "spilled_over": explanation.spilled_over,
        "primary": explanation.primary,
        "failover": explanation.failover,
        "failover_from": explanation.failover_from,
        "weighted": explanation.weighted,
        "last_resort": explanation.last_resort,
        "weights": weights,
        "export_to": export_to,
        "policy_disagrees": view.policy_disagrees,
        "exported_to_asker": exported,
        "export_to_checks": gate_words(gate),
        "rcode": if exported { "NOERROR" } else { "NXDOMAIN" },
        "fail_open": explanation.fail_open,
        "stale_clusters_excluded": explanation.stale_clusters_excluded,
        "answer_truncated": answer_truncated,
        "answer": answer,
        "max_answers": state.authority.max_answers,
        "no_preference": explanation.chosen == Tier::Any && place.is_none(),
        "out_by_health_check": failing_checks,
    }))
    .into_response()
}
