//! The settings command family: operator overrides of runtime settings,
//! validated and normalized against the schema in `crate::settings`.

use std::collections::BTreeMap;

use super::history::field;
use super::ControlState;
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

impl ControlState {
    /// Set (`Some`) or reset (`None`) settings: all validated first, so one
    /// bad key changes nothing.
    pub(super) fn update_settings(&mut self, req: &Request, changes: &BTreeMap<String, Option<String>>) -> Response {
        let mut normalized = Vec::new();
        for (k, v) in changes {
            let v = match v {
                Some(raw) => {
                    Some(crate::settings::normalize(k, raw).map_err(|e| CommandError::new(ErrorKind::Invalid, e))?)
                }
                None => crate::settings::find(k)
                    .map(|_| None)
                    .ok_or_else(|| CommandError::new(ErrorKind::Invalid, format!("unknown setting {k}")))?,
            };
            normalized.push((k.clone(), v));
        }
        for (k, v) in normalized {
            let shown = v.clone().unwrap_or_default();
            let reason = Some(format!("{k} = {}", v.as_deref().unwrap_or("(default)")));
            match v {
                Some(v) => self.settings.insert(k.clone(), v),
                None => self.settings.remove(&k),
            };
            self.changed(req, format!("setting:{k}"), vec![field("value", shown)]);
            self.audit(req, &format!("setting:{k}"), reason);
        }
        Ok(Reply::Settings(self.settings.clone()))
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, ErrorKind, Request};
    use crate::state::ControlState;

    fn req(command: Command) -> Request {
        Request { at_ms: 1_000, node: 1, actor: "op".into(), command }
    }

    #[test]
    fn a_bad_key_refuses_the_whole_update() {
        let mut s = ControlState { format_version: 2, ..Default::default() };
        let changes = [("ALERT_CHECK_INTERVAL_SECONDS".to_string(), Some("30".to_string())), ("nope".into(), None)];
        let e = s.apply(&req(Command::UpdateSettings { changes: changes.into_iter().collect() })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(s, ControlState { format_version: 2, ..Default::default() });
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
    fn settings_updates_validate_everything_first() {
        let mut s = ControlState::default();
        let mut changes = std::collections::BTreeMap::new();
        changes.insert("ALERT_COOLDOWN_SECONDS".to_string(), Some("60".to_string()));
        changes.insert("ALERT_CHECK_INTERVAL_SECONDS".to_string(), Some("-1".to_string()));
        let e = s.apply(&req(Command::UpdateSettings { changes: changes.clone() })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(s.settings.is_empty(), "nothing applied when one value is bad");
        changes.insert("ALERT_CHECK_INTERVAL_SECONDS".to_string(), None);
        s.apply(&req(Command::UpdateSettings { changes })).unwrap();
        assert_eq!(s.settings.get("ALERT_COOLDOWN_SECONDS").map(String::as_str), Some("60"));
    }
}
