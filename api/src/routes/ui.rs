//! The operator UI mount; pages come from the `ui` crate.

use axum::extract::State;
use axum::response::Html;

use crate::AppState;

pub async fn index(State(s): State<AppState>) -> Html<String> {
    let status = s.cluster.report();
    Html(ui::placeholder(s.cluster.id, status.leader_id, &status.role))
}
