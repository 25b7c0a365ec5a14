//! The review page of `evalloop serve`: reviewers log in with a key of scope `annotate` (a
//! session cookie afterwards), pick a queue and label its items one at a time; each answer is
//! stored as feedback events with the reviewer (the key's name) as `user_id`, linked to the
//! queue ([`evalloop_core::queue::record_answer`]).
//!
//! Routes: `GET /review` (the queues, or the login form), `POST /review/login`, `POST
//! /review/logout`, `GET /review/queues/{queue}` (the reviewer's next item), `POST
//! /review/queues/{queue}/answer` (a form: `position`, `answer` = 1-5, `up`, `down`, `a`, `b`,
//! `tie` or `skip`, `comment`), `GET /review/assets/review.js`. Pages are server-rendered
//! (`page`), forms work without JavaScript; the script adds the keyboard shortcuts.
//!
//! A preference queue's page shows the pair's two outputs side by side, each reviewer seeing a
//! fixed side for each output ([`queue::shown_swapped`]); `a` and `b` name the sides as shown and
//! are turned back into the item's orientation before they are stored. An answer on an item
//! that others brought to its `reviewers_per_item` labels meanwhile is not stored: the answer is
//! 409 with the reviewer's next item and a notice. Failed logins are limited per client address
//! (`limit`): the 11th in a minute is 429 with `Retry-After`. The cookie is `HttpOnly`,
//! `SameSite=Strict` (a form on another site cannot post with it) and `Secure` behind a proxy
//! that says `X-Forwarded-Proto: https`; every page is sent with a content security policy that
//! allows no script but the page's own file.

pub mod limit;
pub mod page;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Extension, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evalloop_core::queue::{self, Answer, LabelOutcome, QueueKind, Recorded};
use evalloop_core::record::Choice;
use serde::Deserialize;

use crate::app::{AppState, KnownKey};
use crate::keys::Scope;
use page::{QueueRow, Standing};
use session::{COOKIE, SESSION_S, Session};

/// The keyboard shortcuts, served at `/review/assets/review.js`.
pub const REVIEW_JS: &str = include_str!("../assets/review.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The review routes, merged into the service's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/review", get(index))
        .route("/review/login", post(login))
        .route("/review/logout", post(logout))
        .route("/review/assets/review.js", get(script))
        .route("/review/queues/{queue}", get(next))
        .route("/review/queues/{queue}/answer", post(answer))
}

/// An HTML answer with the page's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    html(status, page::error(message))
}

/// The key behind the request's session cookie, when the session is valid and its key still
/// works with scope `annotate` or `admin`.
fn reviewer(state: &AppState, headers: &HeaderMap) -> Option<KnownKey> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let value = session::cookie(cookies, COOKIE)?;
    let s = session::verify(&state.secret, value, chrono::Utc::now().timestamp())?;
    let key = state.keys.read().unwrap_or_else(|p| p.into_inner()).get(&s.key_hash).cloned()?;
    key.scope.allows(Scope::Annotate).then_some(key)
}

/// `GET /review/assets/review.js`.
async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        REVIEW_JS,
    )
        .into_response()
}

/// `GET /review`: the login form, or the queues for a logged-in reviewer.
async fn index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(key) = reviewer(&state, &headers) else {
        return html(StatusCode::OK, page::login(None));
    };
    let who = key.name.clone();
    let rows = state
        .reader
        .run(move |s| -> evalloop_core::Result<Vec<QueueRow>> {
            let items = s.queue_items(None)?;
            let labels = s.queue_labels(None)?;
            Ok(s.queues()?
                .into_iter()
                .map(|spec| {
                    let it: Vec<_> = items.iter().filter(|i| i.queue == spec.name).cloned().collect();
                    let la: Vec<_> = labels.iter().filter(|l| l.queue == spec.name).cloned().collect();
                    let p = queue::progress(&spec, &it, &la);
                    let mine = la.iter().filter(|l| l.reviewer == who).count();
                    QueueRow { done: p.done, items: p.items, mine, spec }
                })
                .collect())
        })
        .await;
    match rows {
        Ok(Ok(rows)) => html(StatusCode::OK, page::index(&key.name, &rows)),
        Ok(Err(e)) => store_error(&e.to_string()),
        Err(e) => store_error(&e),
    }
}

fn store_error(e: &str) -> Response {
    tracing::error!("review page: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer; try again in a moment")
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    key: String,
}

/// `POST /review/login`: a key of scope `annotate` (or `admin`) gets a session cookie.
async fn login(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    // The client's address: the peer's, or behind a trusted proxy the one it forwards (a router
    // served without connect info, as in-process tests build it, counts as one client).
    let peer = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| a.ip());
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let addr = limit::client_address(peer, forwarded, &state.settings.trusted_proxies);
    let now = std::time::Instant::now();
    if let Err(wait) = state.review_logins.check(addr, now) {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            page::login(Some(&format!(
                "too many failed logins from your address ({} in a minute); try again in {wait} s",
                limit::MAX_FAILURES
            ))),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let Ok(Form(f)) = form else {
        state.review_logins.fail(addr, now);
        return html(StatusCode::BAD_REQUEST, page::login(Some("the form was not understood; send `key`")));
    };
    let hash = crate::keys::hash_key(f.key.trim());
    let key = state.keys.read().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
    let key = match key {
        Some(k) if k.scope.allows(Scope::Annotate) => k,
        Some(k) => {
            return html(
                StatusCode::FORBIDDEN,
                page::login(Some(&format!(
                    "key {:?} has scope {}; the review page needs a key of scope annotate",
                    k.name,
                    k.scope.as_str()
                ))),
            );
        }
        None => {
            state.review_logins.fail(addr, now);
            tracing::warn!(target: "evalloop::review", %addr, "failed login: unknown or revoked key");
            return html(StatusCode::UNAUTHORIZED, page::login(Some("unknown or revoked API key")));
        }
    };
    let expires = chrono::Utc::now().timestamp() + SESSION_S;
    let value = session::sign(&state.secret, &Session { key_hash: hash, expires });
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = format!(
        "{COOKIE}={value}; Path=/review; Max-Age={SESSION_S}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    );
    tracing::info!(target: "evalloop::review", reviewer = key.name, "logged in");
    let mut r = see_other("/review");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /review/logout`: the cookie is cleared.
async fn logout() -> Response {
    let mut r = see_other("/review");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("evalloop_review=; Path=/review; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    r
}

/// What the item page needs from the store.
enum NextItem {
    NoQueue,
    Item {
        spec: Box<queue::QueueSpec>,
        item: queue::QueueItem,
        /// The request's prompt and output; for a pair, A's and B's.
        texts: Vec<(String, String)>,
        standing: Standing,
    },
    Done {
        spec: Box<queue::QueueSpec>,
        standing: Standing,
    },
}

fn standing(labels: &[queue::QueueLabel], answered_open: (usize, usize), who: &str) -> Standing {
    let mine = labels.iter().filter(|l| l.reviewer == who);
    let labelled = mine.clone().filter(|l| l.outcome == LabelOutcome::Labelled).count();
    Standing { answered: answered_open.0, labelled, skipped: answered_open.0 - labelled, open: answered_open.1 }
}

/// `GET /review/queues/{queue}`: the reviewer's next item, or "done".
async fn next(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let Some(key) = reviewer(&state, &headers) else {
        return see_other("/review");
    };
    next_page(&state, name, key.name, StatusCode::OK, None).await
}

/// The page of `who`'s next item on queue `name` (or "done"), with `status` and a notice above
/// it when one is given.
async fn next_page(
    state: &AppState,
    name: String,
    who: String,
    status: StatusCode,
    notice: Option<String>,
) -> Response {
    let reviewer = who.clone();
    let found = state
        .reader
        .run(move |s| -> evalloop_core::Result<NextItem> {
            let Some(spec) = s.queue(&name)? else { return Ok(NextItem::NoQueue) };
            let items = s.queue_items(Some(&name))?;
            let labels = s.queue_labels(Some(&name))?;
            let standing = standing(&labels, queue::reviewer_standing(&spec, &items, &labels, &who), &who);
            match queue::next_item(&spec, &items, &labels, &who) {
                None => Ok(NextItem::Done { spec: Box::new(spec), standing }),
                Some(item) => {
                    let ids: Vec<String> =
                        std::iter::once(item.request_id.clone()).chain(item.other_request_id.clone()).collect();
                    let texts = s.request_texts(&ids)?.into_iter().map(|(_, t)| (t.prompt, t.output)).collect();
                    Ok(NextItem::Item { spec: Box::new(spec), item: item.clone(), texts, standing })
                }
            }
        })
        .await;
    let notice = notice.as_deref();
    match found {
        Ok(Ok(NextItem::NoQueue)) => error(StatusCode::NOT_FOUND, "no such queue"),
        Ok(Ok(NextItem::Done { spec, standing })) => html(status, page::done(&spec, &standing, notice)),
        Ok(Ok(NextItem::Item { spec, item, texts, standing })) => match texts.as_slice() {
            [a, b] => {
                let swapped = queue::shown_swapped(&spec.name, item.position, &reviewer);
                let (left, right) = if swapped { (b, a) } else { (a, b) };
                let shown = [(left.0.as_str(), left.1.as_str()), (right.0.as_str(), right.1.as_str())];
                html(status, page::pair(&spec, &item, shown, &standing, notice))
            }
            [(prompt, output)] => html(status, page::item(&spec, &item, prompt, output, &standing, notice)),
            _ => store_error("an item's texts did not come back"),
        },
        Ok(Err(e)) => store_error(&e.to_string()),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Deserialize)]
struct AnswerForm {
    position: u32,
    answer: String,
    #[serde(default)]
    comment: String,
}

/// `POST /review/queues/{queue}/answer`: records the answer, then shows the next item.
async fn answer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    let Some(key) = reviewer(&state, &headers) else {
        return see_other("/review");
    };
    let Ok(Form(f)) = form else {
        return error(StatusCode::BAD_REQUEST, "the answer form was not understood: send position and answer");
    };
    let answer = match f.answer.as_str() {
        "skip" => Answer::Skip,
        "up" => Answer::Thumb(true),
        "down" => Answer::Thumb(false),
        // The sides as shown; turned to the item's orientation below.
        "a" => Answer::Prefer(Choice::A),
        "b" => Answer::Prefer(Choice::B),
        "tie" => Answer::Prefer(Choice::Tie),
        r => match r.parse::<u8>() {
            Ok(v) => Answer::Rating(v),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("answer {r:?}: expected 1-5, up, down, a, b, tie or skip"),
                );
            }
        },
    };
    if f.comment.chars().count() > 4000 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the comment is longer than 4000 characters");
    }
    let position = f.position;
    let who = key.name.clone();
    let queue_name = name.clone();
    let done = state
        .reader
        .run(move |s| -> evalloop_core::Result<Option<Recorded>> {
            let Some(spec) = s.queue(&queue_name)? else { return Ok(None) };
            let items = s.queue_items(Some(&queue_name))?;
            let item = items.iter().find(|i| i.position == f.position).ok_or_else(|| {
                evalloop_core::Error::Input(format!("queue {queue_name:?} has no item at position {}", f.position))
            })?;
            let answer = match answer {
                Answer::Prefer(c)
                    if spec.kind == QueueKind::Preference && queue::shown_swapped(&spec.name, item.position, &who) =>
                {
                    Answer::Prefer(c.flipped())
                }
                a => a,
            };
            let comment = Some(f.comment.as_str());
            queue::record_answer(s, &spec, item, &who, &answer, comment, chrono::Utc::now()).map(Some)
        })
        .await;
    match done {
        Ok(Ok(Some(Recorded::Stored | Recorded::Duplicate))) => see_other(&format!("/review/queues/{}", name)),
        Ok(Ok(Some(Recorded::Full))) => {
            let notice = format!(
                "Item {} received its labels from other reviewers meanwhile, so your answer was not stored. \
                 Here is your next item.",
                position + 1
            );
            next_page(&state, name, key.name, StatusCode::CONFLICT, Some(notice)).await
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such queue"),
        Ok(Err(e @ evalloop_core::Error::Input(_))) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Ok(Err(e)) => store_error(&e.to_string()),
        Err(e) => store_error(&e),
    }
}
