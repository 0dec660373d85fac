//! Mailbox providers: an operator's mode override and auto-protect's decision.
//! The effective mode is the override unless it is `auto` (or unset), in which
//! case auto-protect decides, defaulting to `normal`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::field;
use super::{validate_name, ControlState};
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

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

// ---- the provider command family ----

impl ControlState {
    /// An operator's override (`auto: false`) or auto-protect's decision.
    pub(super) fn provider_mode(
        &mut self,
        req: &Request,
        provider: &str,
        mode: &str,
        auto: bool,
        reason: &Option<String>,
    ) -> Response {
        validate_name("provider", provider)?;
        let p = self.set_provider_mode(provider, mode, auto, reason.clone(), req.at_ms)?;
        let fields =
            vec![field(if auto { "auto_mode" } else { "override_mode" }, mode), field("effective", p.effective())];
        self.changed(req, format!("provider:{provider}"), fields);
        let detail = reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        self.audit(req, &format!("provider:{provider}"), Some(format!("mode {mode}{detail}")));
        Ok(Reply::Provider(p))
    }
}

#[cfg(test)]
#[allow(unused_imports)]
mod command_tests {
    use crate::command::*;
    use crate::state::testkit::{beat, req};
    use crate::state::worker::{metric, MetricMap};
    use crate::state::*;

    #[test]
    fn auto_protect_never_overrides_an_operator_pin() {
        let mut s = ControlState::default();
        s.set_provider_mode("gmail", "cautious", true, Some("tempfail".into()), 1).unwrap();
        assert_eq!(s.provider_modes()["gmail"], "cautious");
        s.set_provider_mode("gmail", "normal", false, None, 2).unwrap();
        assert_eq!(s.set_provider_mode("gmail", "drain", true, None, 3).unwrap_err().kind, ErrorKind::Conflict);
        s.set_provider_mode("gmail", "auto", false, None, 4).unwrap();
        assert_eq!(s.provider_modes()["gmail"], "cautious", "auto hands control back");
        assert!(s.set_provider_mode("gmail", "bogus", false, None, 5).is_err());
    }
}
