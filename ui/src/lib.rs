//! Server-rendered operator pages (askama), compiled into the binary.

use askama::Template;

#[derive(Template)]
#[template(path = "placeholder.html")]
struct Placeholder<'a> {
    node_id: u64,
    leader: String,
    role: &'a str,
}

/// The interim landing page: which node this is and who leads.
pub fn placeholder(node_id: u64, leader_id: Option<u64>, role: &str) -> String {
    let leader = leader_id.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
    Placeholder { node_id, leader, role }.render().unwrap_or_else(|e| format!("template error: {e}"))
}
