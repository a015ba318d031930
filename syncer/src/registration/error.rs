//! What the registration API answers when it says no: an HTTP status and
//! `{"error": "...", "field": "..."}`.

use axum::http::StatusCode;
use meshdns_proto::InvalidField;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is not valid (names the field).
    #[error("{0}")]
    Invalid(InvalidField),
    /// 401: no token, or not one of ours.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// 403: the token may not act on this service.
    #[error("this token may not register {0}")]
    Forbidden(String),
    /// 403: the instance was registered by another token.
    #[error("{0} was registered with another token; only that token may change it")]
    NotOwner(String),
    /// 404: no such registration (it lapsed, or never was).
    #[error("no registration {0}")]
    NotFound(String),
    /// 409: the registration disagrees with the service's other instances.
    #[error("{field}: {why}")]
    Conflict { field: String, why: String },
    /// 413: the body, or a list in it, is too big.
    #[error("{field}: {why}")]
    TooLarge { field: String, why: String },
    /// 429: a capacity limit (`--max-registrations`, ...) is reached.
    #[error("{field}: {why}")]
    Full { field: String, why: String },
    /// 429: this client sends too many requests.
    #[error("too many requests from this address; retry later")]
    RateLimited,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::NotOwner(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Full { .. } | ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid(e) => Some(&e.field),
            ApiError::Conflict { field, .. }
            | ApiError::TooLarge { field, .. }
            | ApiError::Full { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The message without the field prefix (the field is its own key).
    pub fn message(&self) -> String {
        match self {
            ApiError::Invalid(e) => e.problem.to_string(),
            ApiError::Conflict { why, .. }
            | ApiError::TooLarge { why, .. }
            | ApiError::Full { why, .. } => why.clone(),
            other => other.to_string(),
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError::Invalid(e)
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = axum::Json(serde_json::json!({
            "error": self.message(),
            "field": self.field(),
        }));
        match self {
            ApiError::Unauthenticated => (
                self.status(),
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"meshdns-registration\"",
                )],
                body,
            )
                .into_response(),
            ApiError::RateLimited => (
                self.status(),
                [(axum::http::header::RETRY_AFTER, "1")],
                body,
            )
                .into_response(),
            _ => (self.status(), body).into_response(),
        }
    }
}
