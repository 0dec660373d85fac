//! Mailbox providers: an operator's mode override and auto-protect's decision.
//! The effective mode is the override unless it is `auto` (or unset), in which
//! case auto-protect decides, defaulting to `normal`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ControlState;
use crate::command::{CommandError, ErrorKind};

pub const MODES: [&str; 4] = ["normal", "cautious", "drain", "auto"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ProviderState {
    pub override_mode: Option<String>,
    pub auto_mode: Option<String>,
    pub auto_reason: Option<String>,
    pub updated_ms: u64,
}

impl ProviderState {
    pub fn effective(&self) -> &str {
        match self.override_mode.as_deref() {
            Some(m) if m != "auto" => m,
            _ => self.auto_mode.as_deref().unwrap_or("normal"),
        }
    }

    /// Auto-protect may act unless an operator pinned a concrete mode.
    pub fn auto_allowed(&self) -> bool {
        matches!(self.override_mode.as_deref(), None | Some("auto"))
    }
}

impl ControlState {
    pub fn provider_modes(&self) -> BTreeMap<String, String> {
        self.providers.iter().map(|(k, p)| (k.clone(), p.effective().to_string())).collect()
    }

    pub fn set_provider_mode(
        &mut self,
        provider: &str,
        mode: &str,
        auto: bool,
        reason: Option<String>,
        at: u64,
    ) -> Result<ProviderState, CommandError> {
        if !MODES.contains(&mode) || (auto && mode == "auto") {
            return Err(CommandError::new(ErrorKind::Invalid, format!("mode must be one of {MODES:?}, got {mode:?}")));
        }
        let p = self.providers.entry(provider.to_string()).or_default();
        if auto {
            if !p.auto_allowed() {
                return Err(CommandError::new(
                    ErrorKind::Conflict,
                    format!("provider {provider} is pinned to {} by an operator", p.effective()),
                ));
            }
            p.auto_mode = Some(mode.to_string());
            p.auto_reason = reason;
        } else {
            p.override_mode = Some(mode.to_string());
        }
        p.updated_ms = at;
        Ok(p.clone())
    }
}
