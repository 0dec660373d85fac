//! `er-bench`: a bounded heartbeat load generator for Engine Room, etcd (through
//! its v3 JSON gateway) and a no-op HTTP endpoint, so all three see the same
//! clients, payloads and concurrency; and a job workload against Engine Room
//! or a Postgres queue (`jobs`). Traffic goes to loopback addresses only.

pub mod jobs;
pub mod load;
pub mod noop;
pub mod report;
pub mod target;

pub use load::{run, LoadOptions};
pub use report::Summary;
pub use target::{Endpoint, Target};
