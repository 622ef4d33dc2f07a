//! Names as NATS sees them: subject tokens, KV keys and consumer names.
//!
//! Bus names, rule names, target ids and plugin kv keys may hold characters
//! that mean something to NATS (`.` separates subject tokens, `*` and `>` are
//! wildcards, spaces end a subject). Each name is therefore escaped into one
//! token, byte by byte, so the mapping is reversible and the escape of a
//! prefix is a prefix of the escape.

use sha2::{Digest, Sha256};

/// Subjects of the deliveries stream: `busbar.q.<bus>.<rule>.<target>`.
pub const QUEUE_PREFIX: &str = "busbar.q";
/// Subjects of the archive stream: `busbar.arc.<bus>`.
pub const ARCHIVE_PREFIX: &str = "busbar.arc";
/// Subjects of the dead-letter stream: `busbar.dlq.<bus>`.
pub const DLQ_PREFIX: &str = "busbar.dlq";

/// Escapes `name` into one subject token: ASCII letters, digits, `-` and `_`
/// stay, every other byte becomes `~HH`.
pub fn token(name: &str) -> String {
    escape(name, '~', |b| {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    })
}

/// Escapes `name` into the KV key charset (`[-/_=.a-zA-Z0-9]`) without dots,
/// so it is one token of the key: other bytes become `=HH`, and the empty name
/// is `=` (a KV key token cannot be empty).
pub fn kv_token(name: &str) -> String {
    if name.is_empty() {
        return "=".into();
    }
    escape(name, '=', |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/')
    })
}

pub fn untoken(token: &str) -> Option<String> {
    unescape(token, '~')
}

pub fn kv_untoken(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    unescape(token, '=')
}

fn escape(name: &str, esc: char, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push(esc);
            out.push_str(&format!("{b:02X}"));
        }
    }
    out
}

fn unescape(token: &str, esc: char) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut chars = token.bytes();
    while let Some(b) = chars.next() {
        if b == esc as u8 {
            let hi = chars.next()?;
            let lo = chars.next()?;
            let hex = [hi, lo];
            let s = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(s, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

pub fn queue_subject(bus: &str, rule: &str, target: &str) -> String {
    format!(
        "{QUEUE_PREFIX}.{}.{}.{}",
        token(bus),
        token(rule),
        token(target)
    )
}

/// (bus, rule, target) back from a delivery subject.
pub fn parse_queue_subject(subject: &str) -> Option<(String, String, String)> {
    let rest = subject.strip_prefix(QUEUE_PREFIX)?.strip_prefix('.')?;
    let mut it = rest.split('.');
    let (b, r, t) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some((untoken(b)?, untoken(r)?, untoken(t)?))
}

pub fn archive_subject(bus: &str) -> String {
    format!("{ARCHIVE_PREFIX}.{}", token(bus))
}

pub fn dlq_subject(bus: &str) -> String {
    format!("{DLQ_PREFIX}.{}", token(bus))
}

/// The durable consumer of one queue. A hash keeps it short and within the
/// consumer-name charset whatever the names are; the consumer's description
/// carries the readable queue key.
pub fn durable_name(queue_key: &str) -> String {
    let digest = Sha256::digest(queue_key.as_bytes());
    format!("busbar_{}", &hex::encode(digest)[..24])
}

/// A short, header-safe digest used inside message ids.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hold_no_subject_syntax() {
        for name in ["default", "order.flow", "a b*c>d", "~=x", "é", "", "a_b-c"] {
            let t = token(name);
            assert!(!t.contains(['.', '*', '>', ' ']), "{t}");
            assert_eq!(untoken(&t).as_deref(), Some(name));
            let k = kv_token(name);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=".contains(&b)),
                "{k}"
            );
            assert_eq!(kv_untoken(&k).as_deref(), Some(name));
        }
        assert!(kv_token("user:12").starts_with(&kv_token("user:")));
    }

    #[test]
    fn queue_subjects_parse_back() {
        let s = queue_subject("default", "orders.v2", "pay ment");
        assert_eq!(s.split('.').count(), 5);
        assert_eq!(
            parse_queue_subject(&s),
            Some(("default".into(), "orders.v2".into(), "pay ment".into()))
        );
        assert_eq!(parse_queue_subject("busbar.q.a.b"), None);
        assert_ne!(durable_name("a/b/c"), durable_name("a/b/d"));
    }
}
