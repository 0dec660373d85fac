//! Helpers shared by the command families' unit tests.

use super::worker::MetricMap;
use super::{Heartbeat, Metric};
use crate::command::{Command, Request};

pub(crate) fn req(command: Command) -> Request {
    Request { at_ms: 1_000, node: 1, actor: "test".into(), command }
}

pub(crate) fn beat(id: &str, pool: Option<&str>) -> Heartbeat {
    Heartbeat {
        worker_id: id.into(),
        host: "vps-1".into(),
        ip: "127.0.0.1".into(),
        pool: pool.map(Into::into),
        version: "1.0".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: MetricMap::from([("processed", Metric(1.0))]),
        stage_metrics: Default::default(),
        smtp_metrics: Default::default(),
        provider_metrics: Default::default(),
        meta: Default::default(),
    }
}
