//! The service's shared state, its router and the cross-cutting layers: authentication (API
//! keys and feedback tokens), the per-caller rate limit, request timeouts, CORS for browser
//! feedback, metrics and access logs; and [`ApiError`], the one place errors become responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evalloop_core::feedback::HumanPolicy;
use serde_json::json;

use crate::keys::Scope;
use crate::metrics::Metrics;
use crate::reader::Reader;
use crate::routes;
use crate::settings::ServeSettings;
use crate::token::{self, Claims};
use crate::writer::Writer;

/// A key as the service knows it: its name and scope.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub name: String,
    pub scope: Scope,
}

/// Everything the handlers share.
pub struct AppState {
    pub settings: ServeSettings,
    pub policy: HumanPolicy,
    pub writer: Writer,
    pub reader: Reader,
    /// Key hash -> key, for keys that are not revoked; refreshed from the store.
    pub keys: RwLock<HashMap<String, KnownKey>>,
    /// Signs feedback tokens.
    pub secret: Vec<u8>,
    pub metrics: Arc<Metrics>,
    /// Failed review logins per client address.
    pub review_logins: crate::review::limit::LoginLimiter,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl AppState {
    /// The state with an empty key list (filled from the store before serving).
    pub fn new(
        settings: ServeSettings,
        policy: HumanPolicy,
        writer: Writer,
        reader: Reader,
        secret: Vec<u8>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            settings,
            policy,
            writer,
            reader,
            keys: RwLock::new(HashMap::new()),
            secret,
            metrics,
            review_logins: Default::default(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `who`'s allowance; `Err(seconds)` to wait when it is spent.
    fn take(&self, who: &str) -> Result<(), u64> {
        let rate = self.settings.rate_limit_per_s;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = self.settings.rate_limit_burst;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = b.entry(who.to_string()).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// A token bucket: `tokens` requests left at `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An error answer: `{"error": {"code", "message", "path"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`unauthorized`, `bad_body`...).
    pub code: &'static str,
    pub message: String,
    /// The JSON path the error is about, when there is one.
    pub path: Option<String>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without a path.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), path: None, retry_after: None }
    }

    /// The JSON path the error is about.
    pub fn at(mut self, path: Option<String>) -> ApiError {
        self.path = path;
        self
    }

    /// `Retry-After`, in seconds.
    pub fn retry(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(p) = self.path {
            err["path"] = json!(p);
        }
        let mut resp = (self.status, axum::Json(json!({ "error": err }))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Who is calling: a key holder, or a browser with a feedback token.
#[derive(Debug, Clone)]
pub enum Caller {
    Key(KnownKey),
    Token(Claims),
}

impl Caller {
    /// A 403 unless the caller holds a key of a scope that allows `needed`.
    pub fn require(&self, needed: Scope) -> Result<&KnownKey, ApiError> {
        match self {
            Caller::Key(k) if k.scope.allows(needed) => Ok(k),
            Caller::Key(k) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this route needs a key of scope {} (or admin); key {:?} has scope {}",
                    needed.as_str(),
                    k.name,
                    k.scope.as_str()
                ),
            )),
            Caller::Token(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a feedback token may only post feedback (POST /v1/feedback)",
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("no credentials: send `Authorization: Bearer KEY` or a feedback token"))?;
        let auth = auth.to_str().map_err(|_| unauthorized("the Authorization header is not text"))?;
        let (scheme, secret) = auth.split_once(' ').unwrap_or((auth, ""));
        let secret = secret.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
            return Err(unauthorized("the Authorization header must be `Bearer KEY`"));
        }
        let (caller, who) = if secret.contains('.') {
            let now = chrono::Utc::now().timestamp();
            let claims = token::verify(&state.secret, secret, now).map_err(|e| unauthorized(&e.to_string()))?;
            let who = format!("token:{}", claims.request_id);
            (Caller::Token(claims), who)
        } else {
            let hash = crate::keys::hash_key(secret);
            let key = state.keys.read().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
            let key = key.ok_or_else(|| unauthorized("unknown or revoked API key"))?;
            let who = format!("key:{}", key.name);
            (Caller::Key(key), who)
        };
        state.take(&who).map_err(|wait| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit reached; retry in {wait} s"),
            )
            .retry(wait)
        })?;
        Ok(caller)
    }
}

/// The router with every route and layer.
pub fn router(state: Arc<AppState>) -> Router {
    let feedback = Router::new()
        .route("/v1/feedback", post(routes::post_feedback).options(routes::preflight))
        .layer(middleware::from_fn_with_state(state.clone(), cors));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/v1/openapi.json", get(routes::openapi))
        .route("/v1/logs", post(routes::post_logs))
        .route("/v1/requests/{request_id}/summary", get(routes::summary))
        .route("/v1/feedback-tokens", post(routes::post_token))
        .route("/v1/snippet.js", get(routes::snippet))
        .merge(feedback)
        .merge(crate::review::routes())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times every request out, counts it in the metrics and writes one access-log line (method,
/// route, status, time; never headers or bodies, so no key or token reaches the log).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route: &'static str = match req.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        Some("/healthz") => "/healthz",
        Some("/metrics") => "/metrics",
        Some("/v1/openapi.json") => "/v1/openapi.json",
        Some("/v1/logs") => "/v1/logs",
        Some("/v1/feedback") => "/v1/feedback",
        Some("/v1/requests/{request_id}/summary") => "/v1/requests/{request_id}/summary",
        Some("/v1/feedback-tokens") => "/v1/feedback-tokens",
        Some("/v1/snippet.js") => "/v1/snippet.js",
        Some("/review") => "/review",
        Some("/review/login") => "/review/login",
        Some("/review/logout") => "/review/logout",
        Some("/review/assets/review.js") => "/review/assets/review.js",
        Some("/review/queues/{queue}") => "/review/queues/{queue}",
        Some("/review/queues/{queue}/answer") => "/review/queues/{queue}/answer",
        _ => "other",
    };
    let method = req.method().clone();
    let resp = match tokio::time::timeout(state.settings.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", state.settings.request_timeout.as_secs()),
        )
        .retry(1)
        .into_response(),
    };
    let secs = start.elapsed().as_secs_f64();
    state.metrics.observe_request(route, resp.status().as_u16(), secs);
    tracing::info!(target: "evalloop::access", %method, route, status = resp.status().as_u16(), ms = secs * 1e3);
    resp
}

/// CORS for `/v1/feedback`: an allowed `Origin` is echoed back; others get no CORS headers, so
/// the browser refuses the answer.
async fn cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = next.run(req).await;
    if let Some(o) = origin.filter(|o| allowed(&state.settings.cors_origins, o)) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    resp
}

fn allowed(origins: &[String], origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else { return false };
    origins.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(o))
}

/// The `Content-Type` of a request, when it is text.
pub fn content_type(h: &HeaderMap) -> Option<&str> {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}
