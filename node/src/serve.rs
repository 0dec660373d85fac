//! Startup of one node, as a narrated sequence: logging, storage and Raft,
//! listener, bootstrap, serve until a shutdown signal.

use anyhow::Context;
use api::AppState;
use raft_store::Cluster;
use tracing_subscriber::EnvFilter;

use crate::config::NodeConfig;
use crate::transport::server::{self, ConnLimits, Listener};

fn init_logging(json: bool) {
    // The Raft log's WAL crates log at info on every sync and chunk switch.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,sled=warn,raft_log=warn,chunked_wal=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    init_logging(std::env::var("ENGINE_LOG_FORMAT").as_deref() == Ok("json"));
    tracing::info!(node_id = cfg.node_id, listen = %cfg.listen, advertise = %cfg.advertise,
        data_dir = %cfg.data_dir.display(), peers = ?cfg.peers, "starting engine-room node");
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }

    let cluster = Cluster::start(cfg.cluster.clone(), &cfg.data_dir).await.context("cannot start raft")?;
    let state = AppState::with_auth(
        cluster.clone(),
        &cfg.token,
        &cfg.cluster.secret,
        cfg.settings.clone(),
        cfg.batch,
        cfg.auth,
        cfg.jobs,
    );
    let listeners = bind_listeners(&cfg, state).await?;
    let boot = cluster.clone();
    let peers = cfg.peers.clone();
    tokio::spawn(async move {
        if let Err(e) = boot.bootstrap(&peers).await {
            tracing::error!(error = %e, "bootstrap failed");
        }
    });

    loops::spawn_all(std::sync::Arc::new(loops::LoopContext {
        cluster: cluster.clone(),
        env: (*cfg.settings.env).clone(),
        notify: cfg.notify.clone(),
        jobs: cfg.jobs,
        trigger: cfg.trigger.clone(),
    }));

    let supervisor = cluster.supervisor.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        // Cut the tree: loops stop, UI event streams end, so the listeners'
        // graceful shutdown only waits for requests in flight. Those get a
        // bounded time; then the process goes anyway (SIGTERM within 5 s).
        supervisor.shutdown();
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
            tracing::warn!("requests still in flight after 4 s; exiting");
            std::process::exit(0);
        });
        let _ = stop_tx.send(true);
    });
    let limits = ConnLimits {
        header_read_timeout: cfg.transport.header_read_timeout,
        keepalive_idle: cfg.transport.keepalive_idle,
        max_connections: cfg.transport.max_connections,
    };
    let servers: Vec<_> =
        listeners.into_iter().map(|l| tokio::spawn(server::serve(l, limits, stop_rx.clone()))).collect();
    for s in servers {
        s.await.context("http server failed")?;
    }
    tracing::info!("shutting down raft");
    let _ = cluster.raft.shutdown().await;
    Ok(())
}

/// Bind the public listener and, with `ENGINE_RAFT_LISTEN`, the `/raft` one;
/// each gets its TLS setup and its part of the HTTP surface.
async fn bind_listeners(cfg: &NodeConfig, state: AppState) -> anyhow::Result<Vec<Listener>> {
    let t = &cfg.transport;
    let bind = |addr: String| async move {
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))
    };
    if t.tls.is_none() && !crate::transport::is_loopback(&cfg.listen) {
        tracing::warn!(listen = %cfg.listen,
            "!!! TLS IS OFF on a listener reachable from other hosts: the API token, the UI password, the \
             cluster secret and all Raft traffic cross the network in clear text. Set ENGINE_TLS_CERT, \
             ENGINE_TLS_KEY and ENGINE_TLS_CA (`engine-room certs init`) !!!");
    }
    let (public, raft) = api::limited_apps(state, t.limits);
    let tls = t.tls.as_ref();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut listeners = Vec::new();
    match &t.raft_listen {
        None => {
            listeners.push(Listener {
                name: "api+raft",
                tcp: bind(cfg.listen.clone()).await?,
                tls: tls.map(|t| t.shared.clone()),
                raft_needs_client_cert: tls.is_some_and(|t| t.raft_needs_client_cert),
                app: public.merge(raft),
            });
            tracing::info!(addr = %cfg.listen, scheme, "listening (api, ui, raft)");
        }
        Some(raft_addr) => {
            listeners.push(Listener {
                name: "api",
                tcp: bind(cfg.listen.clone()).await?,
                tls: tls.map(|t| t.public_only.clone()),
                raft_needs_client_cert: false,
                app: public,
            });
            // Mutual TLS, if on, is enforced by this listener's handshake.
            listeners.push(Listener {
                name: "raft",
                tcp: bind(raft_addr.clone()).await?,
                tls: tls.map(|t| t.raft_only.clone()),
                raft_needs_client_cert: false,
                app: raft.fallback(api::routes::not_found),
            });
            tracing::info!(addr = %cfg.listen, raft_addr = %raft_addr, scheme, "listening (api, ui) and (raft)");
        }
    }
    Ok(listeners)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
