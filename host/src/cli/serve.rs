//! `busbar serve`: run a node.

use crate::config::Config;
use crate::node::Node;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// The config file used when --config is not given and this file exists.
const DEFAULT_CONFIG: &str = "examples/busbar.toml";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Config file (default: ./examples/busbar.toml when it exists).
    #[arg(long, env = "BUSBAR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "BUSBAR_LISTEN")]
    listen: Option<String>,
    /// Plugins directory, watched for NAME.wasm and NAME.toml [default: ./plugins].
    #[arg(long, env = "BUSBAR_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Data directory: the embedded store and the compiled-plugin cache [default: ./data].
    #[arg(long, env = "BUSBAR_DATA")]
    data: Option<PathBuf>,
    /// Run on NATS JetStream (nats://HOST:PORT) instead of the embedded store.
    #[arg(long, env = "BUSBAR_BUS")]
    bus: Option<String>,
}

pub fn run(args: ServeArgs) -> ExitCode {
    crate::telemetry::init();
    let path = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let mut config = match &path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("busbar: {e:#}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(p) = args.plugins {
        config.server.plugins_dir = p;
    }
    if let Some(d) = args.data {
        config.server.data_dir = d;
    }
    if let Some(b) = args.bus {
        config.server.bus = Some(b);
    }
    if let Ok(t) = std::env::var("BUSBAR_PUBLISH_TOKEN") {
        config.server.publish_token = Some(t);
    }
    if let Ok(t) = std::env::var("BUSBAR_ADMIN_TOKEN") {
        config.server.admin_token = Some(t);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("busbar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(serve(config, path));
    crate::telemetry::shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    // Every connection is a file descriptor: without this, the default soft
    // limit (often 1024), not server.max_connections, would bound a flood.
    match crate::ingest::listener::raise_fd_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit to its hard limit"
            )
        }
        Ok((_, limit)) => tracing::debug!(limit, "open-file limit already at its hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let listen = config.server.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let options = crate::node::StartOptions {
        load_plugins_in_background: true,
    };
    let node = Node::start_with(config, path, options).await?;
    tracing::info!(addr = %listener.local_addr()?, "busbar is serving");
    crate::ingest::serve(node, listener).await
}
