//! `busbar:plugin/http`: one outbound request, refused unless the manifest's
//! `http.allowed_hosts` lists the host (a bare host: the scheme's default
//! port only; `host:port`: that port), and bounded by what is left of the
//! call's wall-clock budget.
//!
//! The check is on addresses, not only names: the host is resolved here, every
//! address it resolves to is checked, and the connection goes to a checked
//! address with no second lookup (so a name cannot resolve to a public address
//! for the check and to 127.0.0.1 for the connection). Loopback, private,
//! link-local, shared (CGNAT), unspecified, multicast and reserved addresses,
//! IPv4 and IPv6 alike (IPv4-mapped and NAT64 forms included), are refused
//! unless the manifest names the address as an IP literal in `allowed_hosts`
//! or lists it, or a network holding it, in `http.allowed_networks`.

use super::State;
use super::bindings::busbar::plugin::http::{Host, HttpError, Request, Response};
use parking_lot::Mutex;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Requests a plugin made while the host was recording instead of sending
/// (`busbar call --http-record`): the manifest's allow-list still decides,
/// and every allowed request is answered `200` with an empty body.
#[derive(Debug, Default)]
pub struct HttpRecorder {
    requests: Mutex<Vec<RecordedRequest>>,
}

/// One request as the plugin made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordedRequest {
    pub plugin: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), if there was one.
    pub body: Option<String>,
}

impl HttpRecorder {
    /// Everything recorded so far, oldest first, leaving the record empty.
    pub fn take(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *self.requests.lock())
    }
}

/// Response bodies larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// An entry of `http.allowed_networks`: an IP address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedNetwork(pub ipnet::IpNet);

impl TryFrom<String> for AllowedNetwork {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(|net| AllowedNetwork(net.trunc()))
            .map_err(|_| {
                "not an IP address or CIDR block (such as 127.0.0.1 or 10.0.0.0/8)".to_string()
            })
    }
}

impl From<AllowedNetwork> for String {
    fn from(n: AllowedNetwork) -> String {
        n.0.to_string()
    }
}

/// Why plugins may not reach `ip` unless their manifest allows it, or `None`
/// for an ordinary public address.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..6] == [0; 6] {
                // NAT64 and the old IPv4-compatible form carry an IPv4 address
                // in their last 32 bits, which is where the packets go.
                internal_v4(embedded_v4(seg[6], seg[7]))
            } else if seg[0] == 0x2002 {
                // 6to4: the IPv4 address of the relay's other end.
                internal_v4(embedded_v4(seg[1], seg[2]))
            } else {
                None
            }
        }
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if a == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (where cloud metadata services answer)")
    } else if a == 100 && b & 0xc0 == 64 {
        Some("shared address space (CGNAT, 100.64.0.0/10)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && b & 0xfe == 18) {
        Some("reserved")
    } else {
        None
    }
}

tokio::task_local! {
    /// The addresses checked for the request being sent, by host name.
    static CHECKED: (String, Vec<SocketAddr>);
}

/// The client's only resolver: it answers with the addresses the request's
/// own check let through, so the connection goes where the check looked.
struct CheckedResolver;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs = CHECKED
            .try_with(|(host, addrs)| {
                host.eq_ignore_ascii_case(name.as_str())
                    .then(|| addrs.clone())
            })
            .ok()
            .flatten();
        let name = name.as_str().to_string();
        Box::pin(async move {
            match addrs {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                // Never expected: fail closed rather than look the name up unchecked.
                None => Err(format!("{name} was not checked against the manifest").into()),
            }
        })
    }
}

/// The HTTP client shared by every plugin. Redirects are not followed (a
/// redirect could lead to a host the manifest does not allow), no proxy is
/// used (it would resolve names itself), names resolve only to the addresses
/// `send` checked, and idle connections are not kept: a connection is bound
/// to the tokio runtime that opened it, and calls may run under different
/// runtimes.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver))
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
        let default_port = if url.scheme() == "https" { 443 } else { 80 };
        let port = url.port().unwrap_or(default_port);
        if !self.host.manifest.http.allows(&host, port, default_port) {
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            tracing::warn!(plugin = %plugin, host = %shown, "outbound HTTP denied by the manifest");
            let hint = if url.port().is_some() {
                " (an entry without a port allows only the scheme's default port)"
            } else {
                ""
            };
            return Err(HttpError::Denied(format!(
                "{shown} is not in http.allowed_hosts of {plugin}.toml{hint}"
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            HttpError::InvalidRequest(format!("{:?} is not an HTTP method", request.method))
        })?;
        if let Some(recorder) = &self.host.http_recorder {
            recorder.requests.lock().push(RecordedRequest {
                plugin: plugin.to_string(),
                method: method.to_string(),
                url: url.to_string(),
                headers: request.headers.clone(),
                body: request
                    .body
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
            });
            return Ok(Response {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
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
        let checked = async {
            let addrs = checked_addresses(&plugin, &self.host.manifest.http, &host, port).await?;
            CHECKED
                .scope((host.clone(), addrs), exchange(builder))
                .await
        };
        match tokio::time::timeout(remaining, checked).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(format!(
                "no complete response within the {} ms left of the call",
                remaining.as_millis()
            ))),
        }
    }
}

/// The addresses of `host` that `plugin` may reach: every address it
/// resolves to, less the internal ones its manifest does not allow.
async fn checked_addresses(
    plugin: &str,
    manifest: &crate::runtime::manifest::Http,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, HttpError> {
    // An IP literal passed `allowed_hosts` only by being written there.
    let (resolved, literal) = match host.parse::<IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], true),
        Err(_) => {
            let found = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| HttpError::Transport(format!("cannot resolve {host}: {e}")))?;
            (found.collect::<Vec<_>>(), false)
        }
    };
    let networks = &manifest.allowed_networks;
    let mut refused = Vec::new();
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| {
            let ip = addr.ip().to_canonical();
            match internal_range(ip) {
                None => true,
                Some(_) if literal || networks.iter().any(|n| n.0.contains(&ip)) => true,
                Some(why) => {
                    refused.push(format!("{ip} ({why})"));
                    false
                }
            }
        })
        .collect();
    if allowed.is_empty() {
        if refused.is_empty() {
            return Err(HttpError::Transport(format!(
                "{host} resolves to no address"
            )));
        }
        tracing::warn!(plugin = %plugin, host = %host, addresses = %refused.join(", "),
                "outbound HTTP to an internal address denied by the manifest");
        return Err(HttpError::Denied(format!(
            "{host} resolves to {}, which plugins may not reach; if that is intended, \
                 add the address or its network to http.allowed_networks of {plugin}.toml",
            refused.join(", ")
        )));
    }
    Ok(allowed)
}

/// Sends the request and reads the whole response, up to [`MAX_RESPONSE_BYTES`].
async fn exchange(builder: reqwest::RequestBuilder) -> Result<Response, HttpError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_in_every_form() {
        for internal in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(internal_range(ip(internal)).is_some(), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700::1111"] {
            assert_eq!(internal_range(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn networks_are_addresses_or_cidr_blocks() {
        let one = AllowedNetwork::try_from("127.0.0.1".to_string()).unwrap();
        assert!(one.0.contains(&ip("127.0.0.1")));
        assert!(!one.0.contains(&ip("127.0.0.2")));
        let block = AllowedNetwork::try_from("10.1.2.3/8".to_string()).unwrap();
        assert_eq!(String::from(block), "10.0.0.0/8");
        let err = AllowedNetwork::try_from("localhost".to_string()).unwrap_err();
        assert!(err.contains("CIDR"), "{err}");
    }
}
