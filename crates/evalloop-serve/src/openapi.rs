//! The API described once, as OpenAPI 3.0 (`GET /v1/openapi.json`).

use serde_json::{Value, json};

/// Every route the service answers, as `(method, path)`; the document describes each one and a
/// test checks the router and the document agree.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/snippet.js"),
    ("post", "/v1/logs"),
    ("post", "/v1/feedback"),
    ("options", "/v1/feedback"),
    ("post", "/v1/feedback-tokens"),
    ("get", "/v1/requests/{request_id}/summary"),
    ("get", "/review"),
    ("post", "/review/login"),
    ("post", "/review/logout"),
    ("get", "/review/assets/review.js"),
    ("get", "/review/queues/{queue}"),
    ("post", "/review/queues/{queue}/answer"),
];

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ingest_op(summary: &str, row_schema: &str, token: bool) -> Value {
    let mut security = vec![json!({ "apiKey": [] })];
    if token {
        security.push(json!({ "feedbackToken": [] }));
    }
    let row = json!({ "$ref": format!("#/components/schemas/{row_schema}") });
    json!({
        "summary": summary,
        "security": security,
        "requestBody": {
            "required": true,
            "content": {
                "application/json": { "schema": { "oneOf": [row, { "type": "array", "items": row }] } },
                "application/x-ndjson": { "schema": { "type": "string", "description": "one JSON object per line" } }
            }
        },
        "responses": {
            "200": {
                "description": "processed (some rows may be rejected); every stored row is committed",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/IngestAnswer" } } }
            },
            "400": error_response("the body is not parseable at all; `path` names where"),
            "401": error_response("no key, an unknown or revoked key, a bad or expired token"),
            "403": error_response("the key's scope does not allow this, or the token is for another request or type"),
            "413": error_response("the body is larger than max_body_bytes, or has more than max_rows rows"),
            "429": error_response("the key's rate limit is reached; see Retry-After"),
            "503": error_response("the write queue is full or the request timed out; see Retry-After")
        }
    })
}

fn html_response(description: &str) -> Value {
    json!({ "description": description, "content": { "text/html": { "schema": { "type": "string" } } } })
}

fn see_other(description: &str) -> Value {
    json!({ "description": description, "headers": { "Location": { "schema": { "type": "string" } } } })
}

fn form_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/x-www-form-urlencoded": {
        "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// The review page's routes (HTML for people; `crate::review`).
fn review_paths() -> Value {
    let queue = json!([{ "name": "queue", "in": "path", "required": true, "schema": { "type": "string" } }]);
    json!({
        "/review": { "get": { "summary": "The review page: the login form, or the queues for a logged-in reviewer",
            "tags": ["review"], "security": [{}, { "reviewSession": [] }],
            "responses": { "200": html_response("the login form or the queues"),
                "503": html_response("the store does not answer") } } },
        "/review/login": { "post": { "summary": "Log in with a key of scope annotate (or admin); sets the session cookie",
            "tags": ["review"], "security": [], "requestBody": form_body("ReviewLogin"),
            "responses": {
                "303": see_other("logged in: `Set-Cookie: evalloop_review=...; HttpOnly; SameSite=Strict`, to /review"),
                "400": html_response("the form was not understood"),
                "401": html_response("unknown or revoked key (counts towards the address's limit)"),
                "403": html_response("the key's scope is not annotate or admin"),
                "429": { "description": "10 failed logins from the client address within a minute; see Retry-After",
                    "headers": { "Retry-After": { "schema": { "type": "integer" } } },
                    "content": { "text/html": { "schema": { "type": "string" } } } } } } },
        "/review/logout": { "post": { "summary": "Log out (the cookie is cleared)", "tags": ["review"], "security": [],
            "responses": { "303": see_other("to /review") } } },
        "/review/assets/review.js": { "get": { "summary": "The review page's keyboard shortcuts", "tags": ["review"],
            "security": [], "responses": { "200": { "description": "JavaScript", "content": { "text/javascript": {} } } } } },
        "/review/queues/{queue}": { "get": {
            "summary": "The reviewer's next item (a request, or a pair of outputs for a preference queue), or 'done'",
            "tags": ["review"], "security": [{ "reviewSession": [] }], "parameters": queue,
            "responses": { "200": html_response("the item, or nothing left"),
                "303": see_other("no valid session: to /review"),
                "404": html_response("no such queue"),
                "503": html_response("the store does not answer") } } },
        "/review/queues/{queue}/answer": { "post": {
            "summary": "Record an answer on an item (a feedback event with the reviewer as user_id), then the next item",
            "tags": ["review"], "security": [{ "reviewSession": [] }], "parameters": queue,
            "requestBody": form_body("ReviewAnswer"),
            "responses": {
                "303": see_other("stored (or given already): to the queue's next item"),
                "400": html_response("a bad form, an answer that does not fit the queue's kind, no item at the position"),
                "404": html_response("no such queue"),
                "409": html_response("the item received its reviewers_per_item labels from others meanwhile: nothing stored; the page is the reviewer's next item with a notice"),
                "413": html_response("a comment longer than 4000 characters"),
                "503": html_response("the store does not answer") } } }
    })
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "evalloop",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Eval logs and human feedback in, feedback summaries out. Rows are validated as `evalloop ingest` validates them; retries with the same request_id / event_id never double count."
        },
        "paths": {
            "/healthz": { "get": { "summary": "Liveness and store check; no credentials", "security": [],
                "responses": { "200": { "description": "ok" }, "503": error_response("the store does not answer") } } },
            "/metrics": { "get": { "summary": "Prometheus text exposition; a read key", "security": [{ "apiKey": [] }],
                "responses": { "200": { "description": "metrics", "content": { "text/plain": {} } },
                    "401": error_response("no or bad key"), "403": error_response("not a read key") } } },
            "/v1/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3" } } } },
            "/v1/snippet.js": { "get": { "summary": "The browser feedback snippet", "security": [],
                "responses": { "200": { "description": "JavaScript", "content": { "text/javascript": {} } } } } },
            "/v1/logs": { "post": ingest_op("Store eval logs (an ingest key)", "EvalLog", false) },
            "/v1/feedback": {
                "post": ingest_op("Store feedback events (an ingest key, or a feedback token for its request)", "FeedbackEvent", true),
                "options": { "summary": "CORS preflight for browsers (origins in [serve] cors_origins)", "security": [],
                    "responses": { "204": { "description": "allowed origins get Access-Control-Allow-* headers" } } }
            },
            "/v1/feedback-tokens": { "post": {
                "summary": "A signed, expiring token for one request's feedback, for a browser (an ingest key)",
                "security": [{ "apiKey": [] }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/TokenRequest" } } } },
                "responses": {
                    "200": { "description": "the token", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Token" } } } },
                    "400": error_response("a bad field; `path` names it"),
                    "401": error_response("no or bad key"), "403": error_response("not an ingest key"),
                    "429": error_response("rate limit")
                }
            } },
            "/v1/requests/{request_id}/summary": { "get": {
                "summary": "The feedback summary of one request (as `evalloop summary --json`; a read key)",
                "security": [{ "apiKey": [] }],
                "parameters": [{ "name": "request_id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "the summary", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Summary" } } } },
                    "401": error_response("no or bad key"), "403": error_response("not a read key"),
                    "404": error_response("no log and no feedback for the request")
                }
            } }
        },
        "components": {
            "securitySchemes": {
                "reviewSession": { "type": "apiKey", "in": "cookie", "name": "evalloop_review",
                    "description": "from POST /review/login (12 hours)" },
                "apiKey": { "type": "http", "scheme": "bearer", "description": "`evalloop keys create` (scopes ingest, read, admin)" },
                "feedbackToken": { "type": "http", "scheme": "bearer", "description": "from POST /v1/feedback-tokens" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
                    "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                        "path": { "type": "string", "description": "JSON path, e.g. $[3].feedback_type" } } } } },
                "EvalLog": { "type": "object", "required": ["request_id", "timestamp", "prompt", "output"], "properties": {
                    "request_id": { "type": "string" }, "timestamp": { "type": "string", "format": "date-time" },
                    "prompt": { "type": "string" }, "output": { "type": "string" },
                    "eval_scores": { "type": "object", "additionalProperties": { "type": "number" } },
                    "evaluator": { "type": "string" }, "feedback_collected": { "type": "boolean" },
                    "metadata": { "type": "object" } } },
                "FeedbackEvent": { "type": "object", "required": ["request_id", "feedback_type"], "properties": {
                    "event_id": { "type": "string", "description": "derived from the content when absent" },
                    "request_id": { "type": "string" },
                    "feedback_type": { "type": "string", "enum": ["explicit_thumbs_up", "explicit_thumbs_down", "explicit_rating",
                        "explicit_text_comment", "explicit_preference", "implicit_usage", "implicit_edit", "implicit_discard"] },
                    "value": {}, "user_id": { "type": "string" }, "timestamp": { "type": "string", "format": "date-time" },
                    "dimension": { "type": "string" },
                    "other_request_id": { "type": "string", "description": "explicit_preference only: output B (value a, b or tie)" },
                    "edited_output": { "type": "string", "description": "implicit_edit only: the text the user turned the output into" } } },
                "IngestAnswer": { "type": "object", "properties": {
                    "received": { "type": "integer" }, "stored": { "type": "integer" }, "duplicate": { "type": "integer" },
                    "conflict": { "type": "integer" }, "rejected": { "type": "integer" },
                    "rows": { "type": "array", "items": { "type": "object", "properties": {
                        "index": { "type": "integer" }, "line": { "type": "integer" },
                        "status": { "type": "string", "enum": ["stored", "duplicate", "conflict", "rejected"] },
                        "id": { "type": "string" }, "path": { "type": "string" }, "reason": { "type": "string" } } } } } },
                "ReviewLogin": { "type": "object", "required": ["key"], "properties": {
                    "key": { "type": "string", "description": "an API key of scope annotate or admin" } } },
                "ReviewAnswer": { "type": "object", "required": ["position", "answer"], "properties": {
                    "position": { "type": "integer", "description": "the item's position in its queue" },
                    "answer": { "type": "string", "enum": ["1", "2", "3", "4", "5", "up", "down", "a", "b", "tie", "skip"],
                        "description": "1-5 (rating queues), up / down (thumbs), a / b / tie as the sides were shown (preference), skip" },
                    "comment": { "type": "string", "maxLength": 4000 } } },
                "TokenRequest": { "type": "object", "required": ["request_id"], "properties": {
                    "request_id": { "type": "string" },
                    "feedback_types": { "type": "array", "items": { "type": "string" } },
                    "ttl_s": { "type": "integer", "minimum": 1 } } },
                "Token": { "type": "object", "properties": { "token": { "type": "string" }, "request_id": { "type": "string" },
                    "feedback_types": { "type": "array", "items": { "type": "string" } },
                    "expires_at": { "type": "string", "format": "date-time" } } },
                "Summary": { "type": "object", "properties": {
                    "request_id": { "type": "string" }, "thumbs_up": { "type": "integer" }, "thumbs_down": { "type": "integer" },
                    "avg_rating": { "type": "number", "nullable": true }, "n_ratings": { "type": "integer" },
                    "comments": { "type": "array", "items": { "type": "string" } },
                    "usage_indicators": { "type": "object", "additionalProperties": { "type": "boolean" } },
                    "human_score": { "type": "number", "nullable": true }, "log_present": { "type": "boolean" },
                    "edited_outputs": { "type": "array", "items": { "type": "string" },
                        "description": "the texts of the request's edits, oldest first; absent when none" } } }
            }
        }
    });
    if let (Some(paths), Value::Object(review)) = (doc["paths"].as_object_mut(), review_paths()) {
        paths.extend(review);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let d = document();
        for (method, path) in ROUTES {
            assert!(d["paths"][path][method].is_object(), "{method} {path} is not in the document");
        }
        let described: usize = d["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(described, ROUTES.len());
    }
}
