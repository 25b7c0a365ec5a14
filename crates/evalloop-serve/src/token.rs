//! Feedback tokens: a signed, expiring permission to post feedback on one request (and,
//! optionally, only some feedback types), handed by a server holding an API key to a browser.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`; the MAC
//! is checked in constant time before the claims are read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one request it may post feedback on.
    #[serde(rename = "r")]
    pub request_id: String,
    /// The feedback types it may post (store names, e.g. `thumbs_up`); empty = any.
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the feedback token is malformed")]
    Malformed,
    #[error("the feedback token's signature does not match")]
    BadSignature,
    #[error("the feedback token expired")]
    Expired,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

/// Signs `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{body}.{tag}")
}

/// Checks a token's signature (constant time) and expiry against `now` (seconds since the epoch).
pub fn verify(secret: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
    let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    if now >= claims.expires {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { request_id: "req-1".into(), types: vec!["explicit_thumbs_up".into()], expires: 1000 }
    }

    #[test]
    fn round_trip_and_expiry() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"secret", &t, 999).unwrap(), claims());
        assert_eq!(verify(b"secret", &t, 1000), Err(TokenError::Expired));
    }

    #[test]
    fn tampering_and_other_secrets_are_refused() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"other", &t, 0), Err(TokenError::BadSignature));
        let forged = Claims { request_id: "req-2".into(), ..claims() };
        let forged_body = sign(b"secret", &forged);
        let mixed = format!("{}.{}", forged_body.split('.').next().unwrap(), t.split('.').nth(1).unwrap());
        assert_eq!(verify(b"secret", &mixed, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(b"secret", "garbage", 0), Err(TokenError::Malformed));
        assert_eq!(verify(b"secret", "a.!!", 0), Err(TokenError::Malformed));
    }
}
