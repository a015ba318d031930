//! The registration API (`--registration-listen`), HTTP/JSON:
//!
//! - `PUT /v1/registrations/{namespace}/{service}/{instance}`: register or
//!   re-register (idempotent; renews the TTL); 201 when new, 200 after.
//! - `PUT /v1/registrations/{namespace}/{service}/{instance}/heartbeat`:
//!   renew the TTL; 404 once it lapsed (register again).
//! - `DELETE /v1/registrations/{namespace}/{service}/{instance}`: withdraw now.
//! - `GET /v1/registrations`: the registrations the token may see.
//!
//! Every request spends its client address's rate limit first, then is
//! authenticated (`Authorization: Bearer <token>`), then checked against
//! the token's scopes. Errors are `{"error": "...", "field": "..."}`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use meshdns_proto::model::{ExportSet, Hostname, Namespace, ServiceKey, ServiceName};
use serde_json::json;

use super::body::{Registration, RegistrationBody, TtlBounds, owner_id};
use super::bounds::Bounds;
use super::error::ApiError;
use super::rate_limit::RateLimit;
use super::state_file::to_unix_ms;
use super::store::{InstanceKey, Put, Store};
use super::tokens::{Scopes, TokenTable};
use crate::metrics::Metrics;
use meshdns_cli::connections::{Peer, client_key};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Arc<RwLock<TokenTable>>,
    pub rate_limit: Arc<RateLimit>,
    /// Per token (its owner id), after authentication: a token used from
    /// many addresses still gets one share.
    pub token_rate_limit: Arc<RateLimit<String>>,
    pub ttl: TtlBounds,
    /// The weight of an instance that gives none (`--weight`).
    pub weight: u32,
    pub bounds: Bounds,
    /// The source's latest set (see [`super::Registrations::source`]).
    pub source: Arc<RwLock<Option<Arc<ExportSet>>>>,
    pub metrics: Arc<Metrics>,
}

type Answer = Result<Response, ApiError>;

impl Api {
    /// Rate limit, then token: the scopes of the caller.
    fn admit(&self, client: SocketAddr, headers: &HeaderMap) -> Result<(Scopes, String), ApiError> {
        // An IPv6 client owns its /64: one bucket, not 2^64.
        let source = client_key(client.ip());
        if !self.rate_limit.allow(source, Instant::now()) {
            self.metrics.vms.rate_limited();
            return Err(ApiError::RateLimited);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthenticated)?;
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let scopes = tokens
            .scopes(token)
            .cloned()
            .ok_or(ApiError::Unauthenticated)?;
        let owner = owner_id(token);
        drop(tokens);
        if !self.token_rate_limit.allow(owner.clone(), Instant::now()) {
            self.metrics.vms.rate_limited();
            return Err(ApiError::RateLimited);
        }
        Ok((scopes, owner))
    }

    /// The instance named by the path, if the caller may act on it.
    fn instance(
        &self,
        client: SocketAddr,
        headers: &HeaderMap,
        (namespace, service, instance): &(String, String, String),
    ) -> Result<(InstanceKey, String), ApiError> {
        let (scopes, owner) = self.admit(client, headers)?;
        let key = InstanceKey {
            service: ServiceKey {
                namespace: Namespace::new(namespace).map_err(|e| e.within("namespace"))?,
                name: ServiceName::new(service).map_err(|e| e.within("service"))?,
            },
            instance: Hostname::new(instance).map_err(|e| e.within("instance"))?,
        };
        if !scopes.allows(namespace, service) {
            return Err(ApiError::Forbidden(key.service.to_string()));
        }
        Ok((key, owner))
    }

    fn count(&self, answer: Answer) -> Response {
        let response = answer.unwrap_or_else(IntoResponse::into_response);
        self.metrics.vms.answered(response.status().as_u16());
        self.metrics.vms.set_registrations(self.store.len());
        response
    }
}

fn shown(key: &InstanceKey, deadline: SystemTime, body: &RegistrationBody) -> serde_json::Value {
    json!({
        "namespace": key.service.namespace.as_str(),
        "service": key.service.name.as_str(),
        "instance": key.instance.as_str(),
        "expires_unix_ms": to_unix_ms(deadline),
        "registration": body,
    })
}

async fn register(
    State(api): State<Api>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = async {
        let (key, owner) = api.instance(client, &headers, &path)?;
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge {
                field: "body".into(),
                why: format!("over {MAX_BODY_BYTES} bytes"),
            })?;
        let body: RegistrationBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Invalid(meshdns_proto::InvalidField::new(
                "body",
                meshdns_proto::error::Problem::BadJson(e.to_string()),
            ))
        })?;
        let registration = Registration {
            owner,
            ..body.validate(&key.service, api.ttl, api.weight)?
        };
        {
            let source = api.source.read().unwrap_or_else(|e| e.into_inner()).clone();
            let live = api.store.subscribe().borrow().clone();
            api.bounds
                .service(&key, &registration, source.as_deref(), &live)?;
        }
        let now = SystemTime::now();
        let deadline = now + registration.ttl;
        let body = registration.body.clone();
        let status = match api.store.put(key.clone(), registration, now)? {
            Put::Created => StatusCode::CREATED,
            Put::Renewed => StatusCode::OK,
        };
        // Creations only at info: a re-register loop is not a log flood.
        if status == StatusCode::CREATED {
            tracing::info!(instance = %key, "registered");
        } else {
            tracing::debug!(instance = %key, "re-registered");
        }
        Ok((status, axum::Json(shown(&key, deadline, &body))).into_response())
    }
    .await;
    api.count(answer)
}

async fn heartbeat(
    State(api): State<Api>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = (|| {
        let (key, owner) = api.instance(client, &headers, &path)?;
        let deadline = api.store.heartbeat(&key, &owner, SystemTime::now())?;
        Ok(axum::Json(json!({ "expires_unix_ms": to_unix_ms(deadline) })).into_response())
    })();
    api.count(answer)
}

async fn deregister(
    State(api): State<Api>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = (|| {
        let (key, owner) = api.instance(client, &headers, &path)?;
        api.store.remove(&key, &owner)?;
        tracing::info!(instance = %key, "deregistered");
        Ok(StatusCode::NO_CONTENT.into_response())
    })();
    api.count(answer)
}

async fn list(
    State(api): State<Api>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let answer = (|| {
        let (scopes, _) = api.admit(client, &headers)?;
        let now = SystemTime::now();
        let shown: Vec<_> = api
            .store
            .list(|k| scopes.allows(k.service.namespace.as_str(), k.service.name.as_str()))
            .into_iter()
            .filter(|(_, _, deadline)| *deadline > now)
            .map(|(k, r, deadline)| shown(&k, deadline, &r.body))
            .collect();
        Ok(axum::Json(json!({ "registrations": shown })).into_response())
    })();
    api.count(answer)
}

async fn not_found(State(api): State<Api>) -> Response {
    let answer = (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "no such endpoint: see /v1/registrations/{namespace}/{service}/{instance}",
            "field": null,
        })),
    )
        .into_response();
    api.count(Ok(answer))
}

async fn not_allowed(State(api): State<Api>) -> Response {
    let answer = (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({
            "error": "method not allowed: PUT or DELETE an instance, PUT its heartbeat, GET the list",
            "field": null,
        })),
    )
        .into_response();
    api.count(Ok(answer))
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/registrations", get(list))
        .route(
            "/v1/registrations/{namespace}/{service}/{instance}",
            put(register).delete(deregister),
        )
        .route(
            "/v1/registrations/{namespace}/{service}/{instance}/heartbeat",
            put(heartbeat),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(api)
}
