//! Bearer tokens. With `server.publish_token` set, publishing (`POST /events`,
//! `POST /cloudevents`, PutEvents) needs the publish or the admin token; with
//! `server.admin_token` set, `/v1/*` and every other EventBridge operation need
//! the admin token. With only the publish token set, that token guards `/v1`
//! too: a node given one secret has no open control plane. With no tokens at
//! all the `Authorization` header is not looked at.
//!
//! Configured and presented tokens are compared the same way: surrounding
//! whitespace trimmed on both sides (a token read from a file keeps its
//! newline), then in constant time. An empty token is never a token: the
//! config refuses one at start-up, and an empty header counts as no header.
//!
//! Where the token may be:
//! - `Authorization: Bearer <token>`;
//! - `X-Busbar-Token: <token>`, for clients that own the `Authorization` header;
//! - the access key id of an AWS SigV4 `Authorization` header
//!   (`Credential=<token>/20240101/us-east-1/events/aws4_request`), so the awscli
//!   and boto3 authenticate with `AWS_ACCESS_KEY_ID=<token>`. busbar does not
//!   check the signature: the key id is the secret here, exactly like a bearer
//!   token, so use TLS in front of busbar when the network is not trusted.

use crate::config::ServerConfig;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Publish,
    Admin,
}

/// Why a request was refused: 401 (no or wrong token) or 403 (a valid token without the right).
#[derive(Debug, Clone)]
pub struct Denied {
    pub status: StatusCode,
    pub message: String,
}

/// Checks the request's token for `scope`.
pub fn check(server: &ServerConfig, headers: &HeaderMap, scope: Scope) -> Result<(), Denied> {
    let admin = configured(&server.admin_token);
    let publish = configured(&server.publish_token);
    let needed = match scope {
        Scope::Publish if publish.is_none() => return Ok(()),
        Scope::Admin if admin.is_none() && publish.is_none() => return Ok(()),
        Scope::Publish => "the publish token or the admin token",
        Scope::Admin if admin.is_none() => "the publish token (no admin token is set)",
        Scope::Admin => "the admin token",
    };
    let Some(given) = presented_token(headers) else {
        return Err(Denied {
            status: StatusCode::UNAUTHORIZED,
            message: format!(
                "this request needs {needed}: send Authorization: Bearer <token> or X-Busbar-Token: <token>"
            ),
        });
    };
    let is_admin = admin.is_some_and(|t| same(t, &given));
    let is_publish = publish.is_some_and(|t| same(t, &given));
    match scope {
        Scope::Admin if is_admin => Ok(()),
        // The only configured token guards everything.
        Scope::Admin if admin.is_none() && is_publish => Ok(()),
        Scope::Publish if is_admin || is_publish => Ok(()),
        Scope::Admin if is_publish => Err(Denied {
            status: StatusCode::FORBIDDEN,
            message:
                "the publish token may only publish events; this request needs the admin token"
                    .into(),
        }),
        _ => Err(Denied {
            status: StatusCode::UNAUTHORIZED,
            message: format!("the token given is not valid; this request needs {needed}"),
        }),
    }
}

/// A configured token as it is compared: trimmed, and `None` when blank
/// (start-up refuses blank tokens; this keeps `check` safe on its own).
fn configured(token: &Option<String>) -> Option<&str> {
    token.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// The token a request carries, from the first place that has one; an empty
/// value is no token at all.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    presented(headers)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-busbar-token").and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    let auth = headers.get("authorization")?.to_str().ok()?.trim();
    if let Some(t) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    {
        return Some(t.to_string());
    }
    if auth.starts_with("AWS4-HMAC-SHA256") {
        return sigv4_access_key(auth).map(str::to_string);
    }
    None
}

/// The access key id in `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...`.
pub fn sigv4_access_key(auth: &str) -> Option<&str> {
    sigv4_scope(auth).and_then(|s| s.split('/').next())
}

/// The region of a SigV4 credential scope, which is the region the client was told to use.
pub fn sigv4_region(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let region = sigv4_scope(auth)?.split('/').nth(2)?;
    let valid = !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| region.to_string())
}

fn sigv4_scope(auth: &str) -> Option<&str> {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256")?;
    let cred = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    Some(cred)
}

/// Compares tokens in time independent of where they differ: both sides are
/// hashed first, so not even the length of the real token shows in the timing.
fn same(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(publish: Option<&str>, admin: Option<&str>) -> ServerConfig {
        ServerConfig {
            publish_token: publish.map(Into::into),
            admin_token: admin.map(Into::into),
            ..Default::default()
        }
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn open_without_tokens_even_with_a_signature() {
        let h = with(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=x/1/us-east-1/events/aws4_request",
        );
        assert!(check(&server(None, None), &h, Scope::Admin).is_ok());
        assert!(check(&server(None, None), &HeaderMap::new(), Scope::Publish).is_ok());
    }

    #[test]
    fn the_matrix() {
        let s = server(Some("pub"), Some("adm"));
        let none = HeaderMap::new();
        assert_eq!(check(&s, &none, Scope::Publish).unwrap_err().status, 401);
        let wrong = with("authorization", "Bearer nope");
        assert_eq!(check(&s, &wrong, Scope::Admin).unwrap_err().status, 401);
        let publish = with("authorization", "Bearer pub");
        assert!(check(&s, &publish, Scope::Publish).is_ok());
        let denied = check(&s, &publish, Scope::Admin).unwrap_err();
        assert_eq!(denied.status, 403);
        assert!(denied.message.contains("admin token"));
        let admin = with("x-busbar-token", "adm");
        assert!(check(&s, &admin, Scope::Publish).is_ok());
        assert!(check(&s, &admin, Scope::Admin).is_ok());
        let sigv4 = with(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=adm/20240101/eu-west-1/events/aws4_request, SignedHeaders=host, Signature=00",
        );
        assert!(check(&s, &sigv4, Scope::Admin).is_ok());
        assert_eq!(sigv4_region(&sigv4).as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn blank_is_never_a_token_and_whitespace_is_trimmed() {
        // Even if a blank token got past start-up, a blank header is no token.
        let s = server(Some(" "), Some("adm\n"));
        let blank = with("x-busbar-token", "");
        assert_eq!(check(&s, &blank, Scope::Admin).unwrap_err().status, 401);
        assert!(check(&s, &with("authorization", "Bearer adm"), Scope::Admin).is_ok());
    }

    #[test]
    fn a_lone_publish_token_guards_the_admin_api() {
        let s = server(Some("pub"), None);
        let denied = check(&s, &HeaderMap::new(), Scope::Admin).unwrap_err();
        assert_eq!(denied.status, 401);
        assert!(
            denied.message.contains("publish token"),
            "{}",
            denied.message
        );
        assert!(check(&s, &with("authorization", "Bearer pub"), Scope::Admin).is_ok());
    }
}
