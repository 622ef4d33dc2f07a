//! The HTTP client every node-facing subcommand shares: where the node is, the
//! token to send, and errors that say what went wrong and what to do about it.

use clap::Args;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// Where `busbar serve` listens when nothing else is configured.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// A node that accepts the connection should answer every admin call well
/// within this; streaming calls (tail) have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The one transport failure that almost always means "no node is running there".
const REFUSED: &str = "connection refused";

/// How to reach a node. Global, so `busbar rules --url U list` and
/// `busbar rules list --url U` both work.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The busbar node to talk to.
    #[arg(
        long,
        env = "BUSBAR_URL",
        default_value = DEFAULT_URL,
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub url: String,
    /// Bearer token: the admin token, or the publish token for `busbar put`.
    #[arg(
        long,
        env = "BUSBAR_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Error {
    /// The command line, or a file it named, is wrong; nothing was sent.
    Input(String),
    /// No HTTP conversation took place.
    Unreachable { url: String, reason: String },
    /// The node answered with an error status.
    Api {
        url: String,
        status: StatusCode,
        code: String,
        message: String,
        hint: Option<String>,
    },
    /// The node answered something this client cannot read.
    Protocol(String),
    /// The command ran but what it was asked to do did not happen (a failed
    /// replay, a dead letter that could not be purged). Already reported.
    Failed(String),
}

impl Error {
    pub fn input(message: impl Into<String>) -> Error {
        Error::Input(message.into())
    }

    /// Exit status: 2 when the command line is at fault (as for clap's own
    /// usage errors), 1 for everything that went wrong at or with the node.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Input(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// Adds advice to an API error with this status; other errors pass unchanged.
    pub fn hint_on(mut self, on: StatusCode, advice: impl Into<String>) -> Error {
        if let Error::Api { status, hint, .. } = &mut self
            && *status == on
        {
            *hint = Some(advice.into());
        }
        self
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(m) | Error::Protocol(m) | Error::Failed(m) => f.write_str(m),
            Error::Unreachable { url, reason } if reason == REFUSED => write!(
                f,
                "cannot reach busbar at {url}: {reason} (is `busbar serve` running? \
                 set --url or BUSBAR_URL if it listens elsewhere)"
            ),
            Error::Unreachable { url, reason } => write!(
                f,
                "cannot reach busbar at {url}: {reason} (check --url or BUSBAR_URL)"
            ),
            Error::Api {
                url,
                status,
                code,
                message,
                hint,
            } => {
                let advice = hint.clone().or_else(|| match *status {
                    StatusCode::UNAUTHORIZED => Some(
                        "pass the node's token with --token or the BUSBAR_TOKEN variable".into(),
                    ),
                    StatusCode::FORBIDDEN => {
                        Some("this needs the admin token (--token or BUSBAR_TOKEN)".into())
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        Some("the node is over its queue limits; retry later".into())
                    }
                    _ => None,
                });
                write!(f, "{message} (HTTP {}", status.as_u16())?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                write!(f, " from {url})")?;
                if let Some(a) = advice {
                    write!(f, "; {a}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// A client of one node.
pub struct Client {
    base: Url,
    token: Option<String>,
    http: Http,
    /// Without an overall timeout, for streams that stay open.
    streaming: Http,
}

impl Client {
    pub fn new(args: &ConnectArgs) -> Result<Client, Error> {
        let base = parse_base_url(&args.url)?;
        let build = |timeout: Option<Duration>| {
            Http::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(timeout)
                .user_agent(concat!("busbar/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::Failed(format!("cannot set up the HTTP client: {e}")))
        };
        Ok(Client {
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
            http: build(Some(REQUEST_TIMEOUT))?,
            streaming: build(None)?,
        })
    }

    /// The node's address as the user should see it in messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + path segments, each percent-encoded (rule names may hold `/`-free
    /// but otherwise arbitrary characters, bus names may hold `/`).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, Error> {
        self.call(Method::GET, segments, query, None)
    }

    pub fn post(&self, segments: &[&str], body: &Value) -> Result<Value, Error> {
        self.call(Method::POST, segments, &[], Some(body))
    }

    pub fn put(&self, segments: &[&str], body: &Value) -> Result<Value, Error> {
        self.call(Method::PUT, segments, &[], Some(body))
    }

    pub fn delete(&self, segments: &[&str]) -> Result<Value, Error> {
        self.call(Method::DELETE, segments, &[], None)
    }

    /// A JSON call; the answer's body when the status is a success.
    pub fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let (status, value) = self.call_raw(method, segments, query, body)?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(self.api_error(status, &value))
        }
    }

    /// A JSON call that hands back any status with its parsed body, for callers
    /// that read failure bodies themselves (`POST /events` answers 429 with entries).
    pub fn call_raw(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Error> {
        let mut req = self.http.request(method, self.url(segments));
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req)?;
        let status = resp.status();
        let text = resp.text().map_err(|e| self.transport(e))?;
        Ok((status, parse_body(&text)))
    }

    /// One operation of the EventBridge API (AWS JSON 1.1), e.g. `EnableRule`.
    pub fn aws(&self, operation: &str, body: &Value) -> Result<Value, Error> {
        let req = self
            .http
            .post(self.url(&[]))
            .header("X-Amz-Target", format!("AWSEvents.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(body.to_string());
        let resp = self.send(req)?;
        let status = resp.status();
        let text = resp.text().map_err(|e| self.transport(e))?;
        let value = parse_body(&text);
        if status.is_success() {
            Ok(value)
        } else {
            Err(self.api_error(status, &value))
        }
    }

    /// Opens a long-lived GET (Server-Sent Events); the response is read as it arrives.
    pub fn stream(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Response, Error> {
        let mut req = self
            .streaming
            .get(self.url(segments))
            .header("Accept", "text/event-stream");
        if !query.is_empty() {
            req = req.query(query);
        }
        let resp = self.send(req)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().map_err(|e| self.transport(e))?;
        Err(self.api_error(status, &parse_body(&text)))
    }

    fn send(&self, req: RequestBuilder) -> Result<Response, Error> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().map_err(|e| self.transport(e))
    }

    /// Turns a transport failure into the one cause a person can act on.
    pub fn transport(&self, e: reqwest::Error) -> Error {
        let url = self.base().to_string();
        if e.is_timeout() {
            return Error::Unreachable {
                url,
                reason: "no answer in time".into(),
            };
        }
        if e.is_decode() {
            return Error::Protocol(format!("unreadable answer from busbar at {url}: {e}"));
        }
        Error::Unreachable {
            url,
            reason: cause(&e),
        }
    }

    pub fn api_error(&self, status: StatusCode, body: &Value) -> Error {
        let (code, message) = error_parts(status, body);
        Error::Api {
            url: self.base().to_string(),
            status,
            code,
            message,
            hint: None,
        }
    }
}

/// Accepts `host:port` as shorthand for `http://host:port`.
pub fn parse_base_url(text: &str) -> Result<Url, Error> {
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let url =
        Url::parse(&full).map_err(|e| Error::input(format!("--url {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::input(format!(
            "--url {text:?}: busbar speaks http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::input(format!("--url {text:?} names no host")));
    }
    Ok(url)
}

/// An empty body reads as null; a body that is not JSON is kept as a string so
/// an error from a proxy in front of the node still reaches the user.
fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.trim().to_string()))
}

/// Reads both error shapes the node uses: `{"error": {"code", "message"}}` on the
/// native and admin API, `{"__type", "message"}` on the EventBridge API.
pub fn error_parts(status: StatusCode, body: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let from_native = body.get("error").and_then(|e| {
        let message = e.get("message").and_then(s).or_else(|| s(e))?;
        Some((e.get("code").and_then(s).unwrap_or_default(), message))
    });
    let from_aws = || {
        let message = body
            .get("message")
            .or_else(|| body.get("Message"))
            .and_then(s)?;
        let code = body
            .get("__type")
            .and_then(s)
            .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
            .unwrap_or_default();
        Some((code, message))
    };
    from_native.or_else(from_aws).unwrap_or_else(|| {
        let message = match body {
            Value::String(t) if !t.is_empty() => t.clone(),
            Value::Null => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string(),
            other => other.to_string(),
        };
        (String::new(), message)
    })
}

/// The innermost cause of a transport error, worded for a person: reqwest's own
/// message ("error sending request for url ...") says nothing the user can act on.
pub fn cause(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        last = Some(s);
        source = s.source();
    }
    match last {
        Some(s) => strip_os_error(&s.to_string()),
        None => e.to_string(),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => REFUSED.into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "connection timed out".into(),
        AddrNotAvailable => "address not available".into(),
        _ => strip_os_error(&e.to_string()),
    }
}

fn strip_os_error(text: &str) -> String {
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `--flag VALUE` where VALUE is JSON text or @FILE, parsed; errors name the flag.
pub fn json_arg(flag: &str, value: &str) -> Result<Value, Error> {
    let text = super::read_arg(value)
        .map_err(|e| Error::input(format!("cannot read {flag} from {value}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        let origin = match value.strip_prefix('@') {
            Some(path) => format!("{flag} (file {path})"),
            None => flag.to_string(),
        };
        Error::input(format!("{origin} is not valid JSON: {e}"))
    })
}

/// A JSON value whose parts a command reads; a missing field is a protocol error
/// naming it, so a node and a CLI of different versions fail clearly.
pub fn field<'a>(value: &'a Value, key: &str, what: &str) -> Result<&'a Value, Error> {
    value
        .get(key)
        .ok_or_else(|| Error::Protocol(format!("the node's answer to {what} has no {key:?} field")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base_url_accepts_host_port_and_rejects_other_schemes() {
        assert_eq!(
            parse_base_url("127.0.0.1:9000").unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            parse_base_url("https://bus.example/").unwrap().as_str(),
            "https://bus.example/"
        );
        let e = parse_base_url("ftp://x").unwrap_err().to_string();
        assert!(e.contains("not ftp"), "{e}");
        assert!(matches!(
            parse_base_url("http://").unwrap_err(),
            Error::Input(_)
        ));
    }

    #[test]
    fn path_segments_are_encoded_under_a_base_path() {
        let args = ConnectArgs {
            url: "http://h:1/prefix/".into(),
            token: None,
        };
        let c = Client::new(&args).unwrap();
        assert_eq!(
            c.url(&["v1", "rules", "orders/eu", "a b"]).as_str(),
            "http://h:1/prefix/v1/rules/orders%2Feu/a%20b"
        );
        assert_eq!(c.base(), "http://h:1/prefix");
    }

    #[test]
    fn both_error_shapes_are_read() {
        let native = json!({"error": {"code": "not_found", "message": "Rule x does not exist"}});
        assert_eq!(
            error_parts(StatusCode::NOT_FOUND, &native),
            ("not_found".into(), "Rule x does not exist".into())
        );
        let aws = json!({"__type": "com.amazon#ResourceNotFoundException", "message": "gone"});
        assert_eq!(
            error_parts(StatusCode::BAD_REQUEST, &aws),
            ("ResourceNotFoundException".into(), "gone".into())
        );
        assert_eq!(
            error_parts(
                StatusCode::BAD_GATEWAY,
                &Value::String("upstream down".into())
            )
            .1,
            "upstream down"
        );
        assert_eq!(
            error_parts(StatusCode::NOT_FOUND, &Value::Null).1,
            "Not Found"
        );
    }

    #[test]
    fn api_errors_carry_advice() {
        let e = Error::Api {
            url: "http://h".into(),
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized".into(),
            message: "missing bearer token".into(),
            hint: None,
        };
        let text = e.to_string();
        assert!(text.starts_with("missing bearer token (HTTP 401 unauthorized from http://h)"));
        assert!(text.contains("BUSBAR_TOKEN"), "{text}");
        let e = e.hint_on(StatusCode::UNAUTHORIZED, "use the admin token");
        assert!(e.to_string().ends_with("; use the admin token"));
    }

    #[test]
    fn json_args_name_the_flag_and_file() {
        let e = json_arg("--detail", "{nope").unwrap_err().to_string();
        assert!(e.starts_with("--detail is not valid JSON"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "[1,").unwrap();
        let e = json_arg("--pattern", &format!("@{}", path.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pattern (file"), "{e}");
        let e = json_arg("--pattern", "@/no/such/file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read --pattern from @/no/such/file"),
            "{e}"
        );
    }

    #[test]
    fn os_error_suffixes_are_dropped() {
        assert_eq!(
            strip_os_error("Connection refused (os error 111)"),
            "connection refused"
        );
    }
}
