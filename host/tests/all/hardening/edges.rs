//! The network edges: slow and idle HTTP clients, tokens, the outbound HTTP allowlist.

use crate::harness::server::TestServer;
use busbar::config::Config;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A bound against hanging, never a timing assertion: every cut-off below
/// is configured at a fraction of a second.
const PATIENCE: Duration = Duration::from_secs(5);

fn connect(server: &TestServer) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
}

/// Sends `trickle` one byte every 100 ms (then nothing) and collects what
/// the server answers until it closes the connection; `None` if it is still
/// open after [`PATIENCE`].
fn until_closed(stream: &mut TcpStream, trickle: &[u8]) -> Option<String> {
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut next = trickle.iter();
    while start.elapsed() < PATIENCE {
        if answer.is_empty()
            && let Some(b) = next.next()
            && stream.write_all(&[*b]).is_err()
        {
            // A write can only fail once the server has let go.
            return Some(String::from_utf8_lossy(&answer).into_owned());
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
        }
    }
    None
}

fn with_bounds(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.server.header_read_timeout_ms = 30_000;
        c.server.body_read_timeout_ms = 30_000;
        c.server.idle_timeout_ms = 30_000;
        tweak(c);
    })
}

#[test]
fn a_client_trickling_headers_is_cut_off() {
    let server = with_bounds(|c| c.server.header_read_timeout_ms = 500);
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /events HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .unwrap();
    // 30 s of header bytes, far longer than the 500 ms allowed.
    let endless = b"x-slow: a".repeat(40);
    let answer = until_closed(&mut stream, &endless);
    assert!(
        answer.is_some(),
        "a connection trickling its headers was still open after {PATIENCE:?}"
    );

    // One that never sends a byte goes the same way.
    let mut silent = connect(&server);
    assert!(
        until_closed(&mut silent, b"").is_some(),
        "a connection that sent nothing was still open after {PATIENCE:?}"
    );
    // The server itself is fine.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_client_trickling_its_body_gets_408() {
    let server = with_bounds(|c| c.server.body_read_timeout_ms = 500);
    let mut stream = connect(&server);
    let body = format!(
        r#"{{"source": "slow", "detail-type": "x", "detail": {{"pad": "{}"}}}}"#,
        "p".repeat(300)
    );
    let head = format!(
        "POST /events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let answer = until_closed(&mut stream, body.as_bytes())
        .unwrap_or_else(|| panic!("a slow body was still being read after {PATIENCE:?}"));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    assert!(answer.contains("server.body_read_timeout_ms"), "{answer}");
    assert!(server.archived().is_empty());

    // A body that arrives in time is served as ever.
    let ok = server.post_json(
        "/events",
        &json!({"source": "quick", "detail-type": "x", "detail": {}}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let server = with_bounds(|c| c.server.idle_timeout_ms = 500);
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let answer = until_closed(&mut stream, b"")
        .unwrap_or_else(|| panic!("an idle connection was still open after {PATIENCE:?}"));
    // Served first, kept alive, then let go.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Opens connection after connection while holding one admitted connection;
/// those over the bound are refused at once, and the admitted one keeps
/// serving probes and ingest.
#[test]
fn thousands_of_idle_connections_do_not_starve_the_admitted_ones() {
    // The flood's both ends live in this process.
    busbar::ingest::listener::raise_fd_limit().expect("raise the open-file limit");
    let server = with_bounds(|c| c.server.max_connections = 300);
    let kept = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", server.url);
    assert_eq!(kept.get(&healthz).send().unwrap().status(), 200);

    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    let flood: Vec<TcpStream> = (0..2500)
        .map(|i| {
            TcpStream::connect_timeout(&addr, PATIENCE)
                .unwrap_or_else(|e| panic!("connection {i} of the flood: {e}"))
        })
        .collect();
    // The last ones are over the bound: answered 503 and closed, not left hanging.
    let mut last = flood.last().unwrap().try_clone().unwrap();
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut refusal = String::new();
    let closed = last.read_to_string(&mut refusal);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "a connection over the bound was not closed: {closed:?}"
    );
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("server.max_connections"), "{refusal}");

    // The connection admitted before the flood is served as ever.
    for i in 0..20 {
        let r = kept.get(&healthz).send().unwrap();
        assert_eq!(r.status(), 200, "probe {i} during the flood");
        let r = kept
            .post(format!("{}/events", server.url))
            .json(&json!({"source": "flood", "detail-type": "x", "detail": {"i": i}}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "event {i} during the flood");
    }
    // Closed connections give their places back.
    drop(flood);
    crate::harness::eventually(
        "a new connection admitted after the flood closed",
        PATIENCE,
        || {
            let fresh = reqwest::blocking::Client::builder()
                .timeout(PATIENCE)
                .build()
                .unwrap();
            let r = fresh.get(&healthz).send().ok()?;
            (r.status() == 200).then_some(())
        },
    );
    assert_eq!(server.archived().len(), 20);
}

/// A blank token, from the config or the environment, stops the node at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_token_is_refused_at_start() {
    for (field, blank) in [
        ("server.publish_token", ""),
        ("server.admin_token", " \t\n"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = data.path().to_path_buf();
        config.server.plugins_dir = plugins.path().to_path_buf();
        if field == "server.publish_token" {
            config.server.publish_token = Some(blank.into());
        } else {
            config.server.admin_token = Some(blank.into());
        }
        let err = match busbar::node::Node::start(config, None).await {
            Ok(_) => panic!("a node started with {field} = {blank:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(field), "{err}");
        assert!(err.contains("empty or only whitespace"), "{err}");
    }

    // `busbar serve` says the same and exits.
    let dir = crate::harness::process::NodeDir::new("");
    let mut server = dir.spawn(&[("BUSBAR_ADMIN_TOKEN", "  ")]);
    let status = crate::harness::eventually(
        "busbar serve to refuse a blank token and exit",
        PATIENCE,
        || server.child.try_wait().unwrap(),
    );
    assert!(!status.success());
    let log = server.log_text();
    assert!(
        log.contains("server.admin_token (or BUSBAR_ADMIN_TOKEN)"),
        "{log}"
    );
}

#[test]
fn tokens_are_compared_trimmed_and_a_blank_header_is_no_token() {
    // As read from a secrets file: with its newline.
    let server = TestServer::start_with(|c| {
        c.server.publish_token = Some("pub-secret\n".into());
        c.server.admin_token = Some("admin-secret\n".into());
    });
    let event = json!({"source": "t", "detail-type": "x", "detail": {}});
    let post = |name: &str, value: &str| {
        server
            .client()
            .post(format!("{}/events", server.url))
            .header(name, value)
            .json(&event)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("authorization", "Bearer pub-secret"), 200);
    assert_eq!(post("x-busbar-token", " admin-secret "), 200);
    assert_eq!(post("authorization", "Bearer "), 401);
    assert_eq!(post("authorization", ""), 401);
    assert_eq!(post("x-busbar-token", ""), 401);
    assert_eq!(post("x-busbar-token", "   "), 401);
}

#[test]
fn a_lone_publish_token_also_guards_the_admin_api() {
    let server = TestServer::start_with(|c| c.server.publish_token = Some("pub-secret".into()));
    let open = server.get("/v1/rules");
    assert_eq!(open.status, 401, "{}", open.text);
    assert!(
        open.error_message().contains("publish token"),
        "{}",
        open.text
    );
    let with_token = server
        .client()
        .get(format!("{}/v1/rules", server.url))
        .bearer_auth("pub-secret")
        .send()
        .unwrap();
    assert_eq!(with_token.status(), 200);
}

/// The start-up log of `busbar serve` bound to every interface without
/// tokens, begun with a low open-file limit.
#[cfg(unix)]
#[test]
fn serve_warns_when_exposed_and_raises_the_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let dir = crate::harness::process::NodeDir::new("");
    let mut command = dir.command();
    // Bound everywhere, spoken to on loopback only.
    command.env("BUSBAR_LISTEN", format!("0.0.0.0:{}", dir.port));
    // SAFETY: only setrlimit, which is async-signal-safe, runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(512);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut server = dir.attach(command.spawn().unwrap());
    server.wait_ready();
    let text = server.log_text();
    assert!(
        text.contains("no token for publishing and the admin API"),
        "{text}"
    );
    let hard = {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        lim.rlim_max
    };
    if hard > 512 {
        assert!(text.contains("raised the open-file limit"), "{text}");
    }
    drop(server);

    let lone = dir.start_with_env(&[("BUSBAR_PUBLISH_TOKEN", "pub-secret")]);
    let text = lone.log_text();
    assert!(
        text.contains("server.publish_token is set but server.admin_token is not"),
        "{text}"
    );
}

/// A loopback HTTP server answering 200 to anything; counts the requests.
fn loopback_sink() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, hits)
}

async fn testkit_get(manifest: &str, url: &str) -> Result<u64, String> {
    use crate::harness::runtime::Harness;
    let manifest = format!("[limits]\ntimeout_ms = 5000\n{manifest}");
    let h = Harness::new(&[("testkit", Some(&manifest))], false).await;
    match h.call("testkit", "http", json!({"url": url})).await {
        Ok(out) => Ok(out[0].detail["status"].as_u64().unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_a_port_allows_only_the_default_port() {
    use std::sync::atomic::Ordering;
    let (port, hits) = loopback_sink();
    // Even with loopback allowed, `localhost` alone is not every port of it.
    let manifest =
        "[http]\nallowed_hosts = [\"localhost\"]\nallowed_networks = [\"127.0.0.0/8\", \"::1\"]\n";
    let err = testkit_get(manifest, &format!("http://localhost:{port}/admin"))
        .await
        .unwrap_err();
    assert!(err.contains("denied:"), "{err}");
    assert!(
        err.contains(&format!("localhost:{port} is not in http.allowed_hosts")),
        "{err}"
    );
    assert!(err.contains("default port"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_resolving_to_loopback_is_refused_unless_its_network_is_allowed() {
    use std::sync::atomic::Ordering;
    let (port, hits) = loopback_sink();
    let url = format!("http://localhost:{port}/hook");
    let hosts = format!("[http]\nallowed_hosts = [\"localhost:{port}\"]\n");
    let err = testkit_get(&hosts, &url).await.unwrap_err();
    assert!(err.contains("denied:"), "{err}");
    assert!(err.contains("127.0.0.1 (loopback)"), "{err}");
    assert!(err.contains("http.allowed_networks"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The cloud metadata address, however it is written, is refused the same way.
    let metadata = "[http]\nallowed_hosts = [\"metadata.internal\"]\n";
    for form in ["169.254.169.254", "[::ffff:169.254.169.254]", "0xa9fea9fe"] {
        let err = testkit_get(metadata, &format!("http://{form}/latest/"))
            .await
            .unwrap_err();
        assert!(err.contains("denied:"), "{form}: {err}");
    }

    // Allowed explicitly, as an address or a network, it is reached.
    let allowed = format!("{hosts}allowed_networks = [\"127.0.0.1\"]\n");
    assert_eq!(testkit_get(&allowed, &url).await, Ok(200));
    let allowed = format!("{hosts}allowed_networks = [\"127.0.0.0/8\"]\n");
    assert_eq!(testkit_get(&allowed, &url).await, Ok(200));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // An IP literal in allowed_hosts allows its own address.
    let literal = format!("[http]\nallowed_hosts = [\"127.0.0.1:{port}\"]\n");
    let status = testkit_get(&literal, &format!("http://127.0.0.1:{port}/hook")).await;
    assert_eq!(status, Ok(200));
}
