//! The review page's session cookie: after a reviewer logs in with an `annotate` key, the cookie
//! carries `base64url(claims) "." base64url(HMAC-SHA256)` under a key derived from the service's
//! secret for this use alone (a feedback token is no session, and a session no token). The claims
//! name the key's hash, so a revoked key ends its sessions at the next key refresh.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "evalloop_review";

/// How long a session lasts, in seconds (12 hours: a working day of reviewing).
pub const SESSION_S: i64 = 12 * 3600;

/// What a session cookie says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the key the reviewer logged in with, hex.
    #[serde(rename = "k")]
    pub key_hash: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // The session key: HMAC(secret, purpose), so it differs from the feedback tokens' key.
    let mut derive = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    derive.update(b"evalloop review session v1");
    let key = derive.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// The cookie value of `session`.
pub fn sign(secret: &[u8], session: &Session) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
    let mut m = mac(secret);
    m.update(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

/// The session in a cookie value, when its signature holds (constant-time check) and it has
/// not expired at `now` (seconds since the epoch).
pub fn verify(secret: &[u8], value: &str, now: i64) -> Option<Session> {
    let (body, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&tag).ok()?;
    let s: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    (now < s.expires).then_some(s)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|p| p.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_verify_expire_and_refuse_feedback_tokens() {
        let s = Session { key_hash: "ab".into(), expires: 100 };
        let v = sign(b"secret", &s);
        assert_eq!(verify(b"secret", &v, 99), Some(s.clone()));
        assert_eq!(verify(b"secret", &v, 100), None);
        assert_eq!(verify(b"other", &v, 0), None);
        // A feedback token signed with the same secret is not a session.
        let token = crate::token::sign(
            b"secret",
            &crate::token::Claims { request_id: "ab".into(), types: vec![], expires: 100 },
        );
        assert_eq!(verify(b"secret", &token, 0), None);
        assert_eq!(cookie("a=1; evalloop_review=x.y; b=2", COOKIE), Some("x.y"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }
}
