//! The accept loop of one listener: a cap on open connections, TCP_NODELAY,
//! the TLS handshake (bounded like a request's headers), HTTP/1.1 with a
//! header-read timeout from a head's first byte and a longer keep-alive idle
//! time (see `idle`), and graceful shutdown. A slow client holds one
//! connection slot for at most the header-read timeout once it starts a
//! request, an idle one for at most the keep-alive idle time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::idle::{HeadTimed, Requests};

/// One bound listener and what it serves.
pub struct Listener {
    /// `api+raft`, `api` or `raft`, for the logs.
    pub name: &'static str,
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    /// Refuse `/raft` requests on connections that showed no client
    /// certificate (mutual TLS on a listener shared with the public API).
    pub raft_needs_client_cert: bool,
    pub app: Router,
}

/// Per-connection limits, the same for every listener of a node.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub keepalive_idle: Duration,
    pub max_connections: usize,
}

/// Serve `l` until `stop` turns true, then stop accepting, close idle
/// connections and wait for those with a request in flight (the caller
/// bounds that wait).
pub async fn serve(l: Listener, limits: ConnLimits, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refused = RateLimitedLog::default();
    loop {
        let (sock, remote) = tokio::select! {
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
            accepted = l.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin; connections that close free some.
                    refused.warn(|| tracing::warn!(listener = l.name, error = %e, "accept failed"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.warn(|| {
                tracing::warn!(
                    listener = l.name,
                    max = limits.max_connections,
                    "connection cap reached (ENGINE_MAX_CONNECTIONS); closing new connections"
                )
            });
            drop(sock);
            continue;
        };
        // Answers (heartbeats, Raft RPCs, forwarded batches) go out at once,
        // not held back by Nagle's algorithm behind an unacknowledged segment.
        let _ = sock.set_nodelay(true);
        let conn = Conn {
            remote,
            app: l.app.clone(),
            raft_needs_client_cert: l.raft_needs_client_cert,
            limits,
            watcher: graceful.watcher(),
        };
        let tls = l.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => conn.serve(sock, false).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(sock)).await {
                    Ok(Ok(stream)) => {
                        let has_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        conn.serve(stream, has_cert).await
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(l.tcp);
    graceful.shutdown().await;
}

/// One accepted connection and what it needs to be served.
struct Conn {
    remote: SocketAddr,
    app: Router,
    raft_needs_client_cert: bool,
    limits: ConnLimits,
    watcher: Watcher,
}

impl Conn {
    async fn serve<I>(self, io: I, has_client_cert: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { remote, app, raft_needs_client_cert, limits, watcher } = self;
        let refuse_raft = raft_needs_client_cert && !has_client_cert;
        let requests = Arc::new(Requests::default());
        let io = HeadTimed::new(io, requests.clone(), limits.header_read_timeout);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let app = app.clone();
            let call = requests.begin();
            async move {
                let _call = call;
                if refuse_raft && is_raft(req.uri().path()) {
                    return Ok::<_, Infallible>(client_certificate_required());
                }
                // What axum::serve would add, for handlers that ask who called.
                req.extensions_mut().insert(ConnectInfo(remote));
                app.oneshot(req).await
            }
        });
        let mut http = http1::Builder::new();
        // hyper's header-read clock starts when it waits for a head, idle
        // time included: it is the keep-alive idle bound here, and
        // `HeadTimed` bounds a started head.
        http.timer(TokioTimer::new()).header_read_timeout(limits.keepalive_idle).keep_alive(true);
        let conn = http.serve_connection(TokioIo::new(io), svc);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%remote, error = %e, "connection closed with an error");
        }
    }
}

fn is_raft(path: &str) -> bool {
    path == "/raft" || path.starts_with("/raft/")
}

fn client_certificate_required() -> Response {
    let body = serde_json::json!({"error": {
        "code": "client_certificate_required",
        "message": "/raft needs a client certificate from the cluster CA (ENGINE_TLS_CLIENT_AUTH=raft)",
    }});
    (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// At most one warning per 10 s: a flood of refused connections must not
/// become a flood of log lines.
#[derive(Default)]
struct RateLimitedLog {
    last_secs: AtomicU64,
}

impl RateLimitedLog {
    fn warn(&self, log: impl FnOnce()) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_secs.load(Ordering::Relaxed);
        if now >= last + 10 && self.last_secs.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            log();
        }
    }
}
