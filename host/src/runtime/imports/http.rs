//! `busbar:plugin/http`: one outbound request, refused unless the manifest's
//! `http.allowed_hosts` lists the host (or host:port), and bounded by what
//! is left of the call's wall-clock budget.

use super::State;
use super::bindings::busbar::plugin::http::{Host, HttpError, Request, Response};

/// Response bodies larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The HTTP client shared by every plugin. Redirects are not followed (a
/// redirect could lead to a host the manifest does not allow), and idle
/// connections are not kept: a connection is bound to the tokio runtime that
/// opened it, and calls may run under different runtimes.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("busbar/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

impl Host for State {
    async fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let plugin = self.host.name.clone();
        let url = reqwest::Url::parse(&request.url).map_err(|e| {
            HttpError::InvalidRequest(format!("url {:?} is not an absolute URL: {e}", request.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "url {:?}: only http and https are supported",
                request.url
            )));
        }
        let host = match url.host_str() {
            // IPv6 literals come bracketed; the allow-list compares them bare.
            Some(h) => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            None => {
                return Err(HttpError::InvalidRequest(format!(
                    "url {:?} has no host",
                    request.url
                )));
            }
        };
        let port = url.port_or_known_default().unwrap_or(80);
        if !self.host.manifest.http.allows(&host, port) {
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            tracing::warn!(plugin = %plugin, host = %shown, "outbound HTTP denied by the manifest");
            return Err(HttpError::Denied(format!(
                "{shown} is not in http.allowed_hosts of {plugin}.toml"
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            HttpError::InvalidRequest(format!("{:?} is not an HTTP method", request.method))
        })?;
        let mut builder = self.host.http.request(method, url);
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                HttpError::InvalidRequest(format!("{name:?} is not a valid header name"))
            })?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                HttpError::InvalidRequest(format!("the value of header {name} is not valid"))
            })?;
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            if body.len() > MAX_REQUEST_BYTES {
                return Err(HttpError::InvalidRequest(format!(
                    "request body is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                    body.len()
                )));
            }
            builder = builder.body(body);
        }
        let remaining = self.clock.remaining();
        if remaining.is_zero() {
            return Err(HttpError::Timeout(
                "the call's time budget is already used up".into(),
            ));
        }
        let exchange = async {
            let response = builder.send().await.map_err(transport)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::Transport(format!(
                        "response body is over {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(remaining, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(format!(
                "no complete response within the {} ms left of the call",
                remaining.as_millis()
            ))),
        }
    }
}

fn transport(e: reqwest::Error) -> HttpError {
    // reqwest's own message is terse ("error sending request"); the causes say why.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        HttpError::Timeout(message)
    } else {
        HttpError::Transport(message)
    }
}
