//! Supervised background work. Every long-running task of a node — the
//! leader loops, the snapshot schedule, the election watch and every UI
//! event stream — runs under one [`Supervisor`]: one cancellation tree that
//! SIGTERM cuts, and one table of named loops with their status
//! (`GET /api/cluster/loops`). A loop that panics is restarted with backoff
//! (1 s doubling to 60 s) and its panics are counted; the rest of the node
//! keeps serving.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use model::views::LoopStatus;
use tokio::sync::watch;

use crate::cluster::now_ms;

#[derive(Clone)]
pub struct Supervisor {
    loops: Arc<Mutex<BTreeMap<&'static str, LoopStatus>>>,
    stop: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self { loops: Arc::default(), stop: watch::channel(false).0 }
    }
}

/// A loop's handle on its own status line.
#[derive(Clone)]
pub struct Probe {
    name: &'static str,
    loops: Arc<Mutex<BTreeMap<&'static str, LoopStatus>>>,
}

impl Probe {
    fn with(&self, f: impl FnOnce(&mut LoopStatus)) {
        // A poisoned table only loses status lines, never the loop itself.
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = loops.get_mut(self.name) {
            f(s);
        }
    }

    /// A round starts.
    pub fn busy(&self) {
        self.with(|s| s.state = "running".into());
    }

    /// A round ended; an error is kept (short: one line of ours) until the next.
    pub fn done(&self, result: Result<(), String>) {
        self.with(|s| {
            s.state = "idle".into();
            s.runs += 1;
            s.last_run_ms = Some(now_ms());
            if result.is_err() {
                s.errors += 1;
            }
            s.last_error = result.err();
        });
    }

    /// Nothing to do this round (not the leader, say): idle, not a run.
    pub fn idle(&self) {
        self.with(|s| s.state = "idle".into());
    }
}

/// Resolves once the node is shutting down.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Run `make(probe)` as the loop `name` until shutdown; restart it with
    /// backoff if it panics. A loop that returns on its own is not restarted.
    pub fn spawn<F, Fut>(&self, name: &'static str, make: F)
    where
        F: Fn(Probe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let status = LoopStatus {
            name: name.to_string(),
            state: "idle".into(),
            runs: 0,
            errors: 0,
            panics: 0,
            last_run_ms: None,
            last_error: None,
        };
        self.loops.lock().unwrap_or_else(|p| p.into_inner()).insert(name, status);
        let probe = Probe { name, loops: self.loops.clone() };
        let stopping = self.stopping();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let mut task = tokio::spawn(make(probe.clone()));
                let ended = tokio::select! {
                    r = &mut task => r,
                    () = stopping.clone().wait() => {
                        task.abort();
                        probe.with(|s| s.state = "stopped".into());
                        return;
                    }
                };
                match ended {
                    Err(e) if e.is_panic() => {
                        let why = panic_text(e.into_panic());
                        tracing::error!(loop_name = name, panic = %why, ?backoff, "loop panicked; restarting");
                        probe.with(|s| {
                            s.panics += 1;
                            s.state = "restarting".into();
                            s.last_error = Some(format!("panicked: {why}"));
                        });
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stopping.clone().wait() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    _ => {
                        probe.with(|s| s.state = "stopped".into());
                        return;
                    }
                }
            }
        });
    }

    /// Every loop's status, by name.
    pub fn statuses(&self) -> Vec<LoopStatus> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// A future that resolves at shutdown, for streams that must end then.
    pub fn stopping(&self) -> Stopping {
        Stopping(self.stop.subscribe())
    }

    /// Cut the tree: every loop and stream ends.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let text = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into());
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_restarted_with_backoff_and_counted_and_shutdown_stops_all() {
        let sup = Supervisor::default();
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        sup.spawn("flaky", move |probe| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                probe.busy();
                if n < 2 {
                    panic!("round {n} failed");
                }
                probe.done(Err("upstream down".into()));
                std::future::pending::<()>().await;
            }
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        let s = &sup.statuses()[0];
        assert_eq!(starts.load(Ordering::SeqCst), 3, "started, restarted after 1 s, then after 2 s");
        assert_eq!((s.panics, s.runs, s.errors), (2, 1, 1));
        assert_eq!(s.state, "idle");
        assert_eq!(s.last_error.as_deref(), Some("upstream down"));
        sup.shutdown();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(sup.statuses()[0].state, "stopped");
        tokio::time::timeout(Duration::from_secs(1), sup.stopping().wait()).await.expect("stopping resolves");
    }
}
