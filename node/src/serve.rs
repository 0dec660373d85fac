//! Startup of one node, as a narrated sequence: logging, storage and Raft,
//! listener, bootstrap, serve until a shutdown signal.

use anyhow::Context;
use api::AppState;
use raft_store::Cluster;
use tracing_subscriber::EnvFilter;

use crate::config::NodeConfig;

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
    );
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(addr = %cfg.listen, "listening");

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
    }));

    // Answers (heartbeats, Raft RPCs, forwarded batches) go out at once,
    // not held back by Nagle's algorithm behind an unacknowledged segment.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let supervisor = cluster.supervisor.clone();
    let stop = async move {
        shutdown_signal().await;
        // Cut the tree: loops stop, UI event streams end, so the server's
        // graceful shutdown only waits for requests in flight. Those get a
        // bounded time; then the process goes anyway (SIGTERM within 5 s).
        supervisor.shutdown();
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
            tracing::warn!("requests still in flight after 4 s; exiting");
            std::process::exit(0);
        });
    };
    // The peer address is kept for the failed-authentication limit.
    let app = api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(stop).await.context("http server failed")?;
    tracing::info!("shutting down raft");
    let _ = cluster.raft.shutdown().await;
    Ok(())
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
