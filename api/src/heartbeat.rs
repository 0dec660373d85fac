//! Heartbeat group commit: every heartbeat that arrives while earlier batches
//! are in flight joins the next batch, and one Raft entry carries the batch.
//! Each caller is answered once its batch is committed and applied.

use std::sync::Arc;
use std::time::Instant;

use raft_store::state::{Heartbeat, HeartbeatAnswer};
use raft_store::{Cluster, Command, Reply};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ApiError;
use crate::metrics::Metrics;

type Answer = Result<HeartbeatAnswer, ApiError>;

struct Pending {
    beat: Heartbeat,
    reply: oneshot::Sender<Answer>,
}

/// Tuning for [`HeartbeatBatcher`].
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most heartbeats in one Raft entry.
    pub max_batch: usize,
    /// Batches proposed concurrently; more arrivals wait and grow the next batch.
    pub max_inflight: usize,
}

#[derive(Clone)]
pub struct HeartbeatBatcher {
    tx: mpsc::Sender<Pending>,
}

impl HeartbeatBatcher {
    pub fn start(cluster: Arc<Cluster>, metrics: Arc<Metrics>, opts: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.max_batch * opts.max_inflight * 4);
        tokio::spawn(run(rx, cluster, metrics, opts));
        Self { tx }
    }

    /// Queue one heartbeat and wait for its committed answer.
    pub async fn submit(&self, beat: Heartbeat) -> Answer {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { beat, reply }).await.map_err(|_| ApiError::unavailable("heartbeat batcher stopped"))?;
        rx.await.map_err(|_| ApiError::unavailable("heartbeat batch dropped"))?
    }
}

async fn run(mut rx: mpsc::Receiver<Pending>, cluster: Arc<Cluster>, metrics: Arc<Metrics>, opts: BatchOptions) {
    let inflight = Arc::new(Semaphore::new(opts.max_inflight));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch grow under load.
        let permit = inflight.clone().acquire_owned().await.expect("semaphore is never closed");
        let mut batch = vec![first];
        while batch.len() < opts.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit(batch, &cluster, &metrics).await;
            drop(permit);
        });
    }
}

async fn commit(batch: Vec<Pending>, cluster: &Cluster, metrics: &Metrics) {
    let started = Instant::now();
    metrics.heartbeat_batch_size.observe(batch.len() as f64);
    let (beats, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.beat, p.reply)).unzip();
    let result = cluster.write("worker", Command::HeartbeatBatch { beats }).await;
    metrics.heartbeat_commit_seconds.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(Ok(Reply::Heartbeats(answers))) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer.map_err(ApiError::from));
            }
        }
        Ok(Ok(other)) => {
            for reply in replies {
                let _ = reply.send(Err(ApiError::internal(format!("unexpected batch reply {other:?}"))));
            }
        }
        Ok(Err(e)) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone().into()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let (status, code) = ApiError::from(e).parts();
            for reply in replies {
                let _ = reply.send(Err(ApiError::new(status, code, msg.clone())));
            }
        }
    }
}
