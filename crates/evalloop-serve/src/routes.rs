//! One handler per route.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use evalloop_core::feedback::FeedbackSummary;
use evalloop_core::ingest::Kind;
use evalloop_core::record::FeedbackType;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::{ApiError, AppState, Caller, content_type};
use crate::body::{self, ParseError, Slot};
use crate::keys::Scope;
use crate::token::{self, Claims};
use crate::writer::{RowStatus, Rows};

/// `GET /healthz`: 200 when the store answers; no credentials needed.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let backend = state
        .reader
        .run(|s| s.log_exists("").map(|_| s.backend()))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?
        .map_err(|e| {
            tracing::error!("health check: {e}");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store does not answer")
        })?;
    Ok(Json(json!({ "status": "ok", "store": backend })))
}

/// `GET /metrics`: Prometheus text; needs a `read` key.
pub async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let text = state.metrics.render(state.writer.queued_rows());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// `GET /v1/openapi.json`: the API as OpenAPI 3.
pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// `GET /v1/snippet.js`: the browser feedback snippet.
pub async fn snippet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        crate::SNIPPET_JS,
    )
        .into_response()
}

/// Anything else: 404 as JSON.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /v1/openapi.json")
}

/// `OPTIONS /v1/feedback`: the CORS preflight (the CORS layer adds the headers).
pub async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `POST /v1/logs`: needs an `ingest` key.
pub async fn post_logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Ingest)?;
    ingest(&state, &caller, Kind::Logs, &headers, body).await
}

/// `POST /v1/feedback`: an `ingest` key, or a feedback token for the rows' request.
pub async fn post_feedback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Caller::Key(_) = caller {
        caller.require(Scope::Ingest)?;
    }
    ingest(&state, &caller, Kind::Feedback, &headers, body).await
}

/// One row of an ingest answer.
#[derive(Debug, Serialize)]
struct RowAnswer {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    status: &'static str,
    /// `request_id` of a log, `event_id` of a feedback event.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The answer to `POST /v1/logs` and `/v1/feedback`.
#[derive(Debug, Serialize)]
struct IngestAnswer {
    received: usize,
    stored: u64,
    duplicate: u64,
    conflict: u64,
    rejected: u64,
    rows: Vec<RowAnswer>,
}

async fn ingest(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {} bytes ([serve] max_body_bytes)", state.settings.max_body_bytes),
            )
        } else {
            ApiError::new(e.status(), "bad_body", e.body_text())
        }
    })?;
    let ndjson = body::is_ndjson(content_type(headers));
    let parsed =
        body::parse(kind, ndjson, &body, chrono::Utc::now(), state.settings.max_rows).map_err(|e| match e {
            ParseError::Body(b) => ApiError::new(StatusCode::BAD_REQUEST, "bad_body", b.reason).at(b.path),
            ParseError::TooManyRows(n) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_rows",
                format!("more than {n} rows in one request ([serve] max_rows); split the body"),
            ),
        })?;
    if let (Caller::Token(claims), Rows::Feedback(rows)) = (caller, &parsed.rows) {
        check_token_scope(claims, rows, &parsed.slots)?;
    }
    let kind_name = match kind {
        Kind::Logs => "logs",
        Kind::Feedback => "feedback",
        Kind::Scores => "scores",
    };
    let mut ids: Vec<String> = match &parsed.rows {
        Rows::Logs(v) => v.iter().map(|l| l.request_id.clone()).collect(),
        Rows::Feedback(v) => v.iter().map(|e| e.event_id.clone()).collect(),
    };
    let statuses = if parsed.rows.is_empty() {
        Vec::new()
    } else {
        let rx = state.writer.submit(parsed.rows).map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the write queue is full; retry shortly").retry(1)
        })?;
        match rx.await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the store refused these rows; nothing of this request was stored (the server log has the cause)",
                ));
            }
        }
    };
    let mut counts = [0u64; 4];
    let rows: Vec<RowAnswer> = parsed
        .slots
        .iter()
        .zip(&parsed.lines)
        .enumerate()
        .map(|(index, (slot, line))| match slot {
            Slot::Valid(i) => {
                let (status, c) = match statuses.get(*i) {
                    Some(RowStatus::Stored) => ("stored", 0),
                    Some(RowStatus::Duplicate) => ("duplicate", 1),
                    _ => ("conflict", 2),
                };
                counts[c] += 1;
                RowAnswer {
                    index,
                    line: *line,
                    status,
                    id: ids.get_mut(*i).map(std::mem::take),
                    path: None,
                    reason: None,
                }
            }
            Slot::Rejected { path, reason } => {
                counts[3] += 1;
                RowAnswer {
                    index,
                    line: *line,
                    status: "rejected",
                    id: None,
                    path: Some(path.clone()),
                    reason: Some(reason.clone()),
                }
            }
        })
        .collect();
    for (c, name) in counts.iter().zip(["stored", "duplicate", "conflict", "rejected"]) {
        state.metrics.add_rows(kind_name, name, *c);
    }
    Ok(Json(IngestAnswer {
        received: rows.len(),
        stored: counts[0],
        duplicate: counts[1],
        conflict: counts[2],
        rejected: counts[3],
        rows,
    })
    .into_response())
}

/// A token posts feedback on its own request, of its allowed types only: else 403 naming the row.
fn check_token_scope(
    claims: &Claims,
    rows: &[evalloop_core::record::FeedbackEvent],
    slots: &[Slot],
) -> Result<(), ApiError> {
    for (index, slot) in slots.iter().enumerate() {
        let Slot::Valid(i) = slot else { continue };
        let e = &rows[*i];
        let at = |f: &str| Some(if slots.len() == 1 { format!("$.{f}") } else { format!("$[{index}].{f}") });
        if e.request_id != claims.request_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this feedback token is for another request_id",
            )
            .at(at("request_id")));
        }
        if !claims.types.is_empty() && !claims.types.iter().any(|t| t == e.feedback_type.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this feedback token allows only {}", claims.types.join(", ")),
            )
            .at(at("feedback_type")));
        }
    }
    Ok(())
}

/// `GET /v1/requests/{request_id}/summary`: `evalloop summary --json`; needs a `read` key.
pub async fn summary(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> Result<Json<FeedbackSummary>, ApiError> {
    caller.require(Scope::Read)?;
    let policy = state.policy.clone();
    let id = request_id.clone();
    let found = state
        .reader
        .run(move |s| -> Result<Option<FeedbackSummary>, String> {
            let events = s.feedback_for(&id).map_err(|e| e.to_string())?;
            let present = s.log_exists(&id).map_err(|e| e.to_string())?;
            if events.is_empty() && !present {
                return Ok(None);
            }
            Ok(Some(FeedbackSummary::from_events(&id, &events, &policy, present)))
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?
        .map_err(|e| {
            tracing::error!("summary: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", "the store could not be read")
        })?;
    found.map(Json).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no log and no feedback for request {request_id:?}"))
    })
}

/// `POST /v1/feedback-tokens`: `{"request_id", "feedback_types"?, "ttl_s"?}`; needs an
/// `ingest` key.
pub async fn post_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Ingest)?;
    let bad = |path: &str, m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", m).at(Some(path.to_string()));
    let body = body.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("$", "the body is not valid UTF-8".into()))?;
    let v = evalloop_core::ingest::parse_json_row(text).map_err(|e| {
        let path = if e.field.is_empty() { "$".to_string() } else { format!("$.{}", e.field) };
        bad(&path, e.reason)
    })?;
    let Value::Object(obj) = v else { return Err(bad("$", "expected a JSON object".into())) };
    for k in obj.keys() {
        if !matches!(k.as_str(), "request_id" | "feedback_types" | "ttl_s") {
            return Err(bad(
                &format!("$.{k}"),
                format!("unknown field {k:?}; expected request_id, feedback_types, ttl_s"),
            ));
        }
    }
    let request_id = match obj.get("request_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad("$.request_id", "must not be empty".into())),
        None | Some(Value::Null) => return Err(bad("$.request_id", "missing".into())),
        Some(_) => return Err(bad("$.request_id", "expected a string".into())),
    };
    let mut types = Vec::new();
    match obj.get("feedback_types") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let path = format!("$.feedback_types[{i}]");
                let name = t.as_str().ok_or_else(|| bad(&path, "expected a string".into()))?;
                let ft = FeedbackType::parse(name).or_else(|| FeedbackType::from_cli(name)).ok_or_else(|| {
                    bad(
                        &path,
                        format!(
                            "unknown feedback_type {name:?}; expected one of {}",
                            FeedbackType::ALL.map(FeedbackType::as_str).join(", ")
                        ),
                    )
                })?;
                types.push(ft.as_str().to_string());
            }
        }
        Some(_) => return Err(bad("$.feedback_types", "expected an array of strings".into())),
    }
    let max = state.settings.token_max_ttl.as_secs();
    let ttl = match obj.get("ttl_s") {
        None | Some(Value::Null) => state.settings.token_ttl.as_secs(),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => n,
            _ => return Err(bad("$.ttl_s", format!("expected whole seconds between 1 and {max}"))),
        },
    };
    let expires = chrono::Utc::now().timestamp() + ttl as i64;
    let claims = Claims { request_id, types, expires };
    let token = token::sign(&state.secret, &claims);
    let expires_at = chrono::DateTime::from_timestamp(expires, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(Json(json!({
        "token": token,
        "request_id": claims.request_id,
        "feedback_types": claims.types,
        "expires_at": expires_at,
    })))
}
