//! Server-rendered operator pages (askama) and their static assets, compiled
//! into the binary. `api` gathers the data and mounts the routes; this crate
//! turns domain state into HTML and knows nothing of HTTP.

pub mod assets;
pub mod build_log;
pub mod builds;
pub mod fleet;
pub mod format;
pub mod hints;
pub mod jobs;
pub mod pages;
pub mod plan;

pub use fleet::{summarize, FleetSummary};
pub use pages::*;

/// Where the UI is mounted; every link in the templates starts with it.
pub const BASE: &str = "/verifier-engine-room";
