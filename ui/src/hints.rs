//! The Hints page: the farm's fix hints with their recipes and how often
//! they matched, the create and edit dialog, and the pattern test that
//! matches a pattern against a pasted log on the server, with the farm's own
//! compiler (`model::state::farm::compile`: same syntax, same size limits,
//! same errors) and the farm's semantics: the pattern is searched in the
//! whole text, so a match may span lines; every line a match touches is
//! shown, its matched part marked.

use std::collections::HashMap;

use askama::Template;
use model::state::farm::Hint;

use crate::build_log::Segment;
use crate::format::{ago, utc};
use crate::pages::{render, Chrome};

/// Longest pattern the page accepts (the API's limit).
pub const MAX_PATTERN_CHARS: usize = 256;
/// Largest pasted log tested, in bytes, and most lines.
pub const MAX_TEST_BYTES: usize = 256 * 1024;
pub const MAX_TEST_LINES: usize = 10_000;
/// Matching lines a test shows.
pub const MAX_SHOWN: usize = 200;

/// One hint as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HintRow {
    pub id: u64,
    pub pattern: String,
    pub env: Vec<(String, String)>,
    pub extra_requirements: Vec<String>,
    pub note: String,
    pub created: String,
    pub updated: String,
    /// Build events kept that recorded this hint.
    pub matched: u64,
    /// The recipe for the edit dialog: `KEY=value` lines, requirement lines.
    pub env_text: String,
    pub requirements_text: String,
}

impl HintRow {
    pub fn new(h: &Hint, matched: u64, now_ms: u64) -> Self {
        HintRow {
            id: h.id,
            pattern: h.pattern.clone(),
            env: h.recipe.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            extra_requirements: h.recipe.extra_requirements.clone(),
            note: h.recipe.note.clone(),
            created: utc(h.created_ms),
            updated: ago(h.updated_ms, now_ms),
            matched,
            env_text: h.recipe.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
            requirements_text: h.recipe.extra_requirements.join("\n"),
        }
    }
}

/// How many kept events recorded each hint (one walk over the events).
pub fn match_counts<'a>(events: impl Iterator<Item = &'a model::state::farm::BuildEvent>) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for e in events {
        for id in &e.hints {
            *counts.entry(*id).or_insert(0) += 1;
        }
    }
    counts
}

#[derive(Template)]
#[template(path = "hints.html")]
struct HintsPage<'a> {
    chrome: &'a Chrome,
    hints: &'a [HintRow],
}

/// The Hints page: the table, the dialog and the pattern test.
pub fn hints_page(chrome: &Chrome, hints: &[HintRow]) -> String {
    render(&HintsPage { chrome, hints })
}

/// One line of a pattern test that a match touches.
#[derive(Debug, Clone, PartialEq)]
pub struct TestLine {
    /// From 1.
    pub n: usize,
    pub segments: Vec<Segment>,
}

/// The outcome of a pattern test.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatternTest {
    /// Why the pattern (or the log) was refused; nothing else is set then.
    pub error: Option<String>,
    pub lines: Vec<TestLine>,
    /// Lines a match touches, shown or not.
    pub matched_lines: usize,
    pub total_lines: usize,
    /// The pattern matches the empty string: the farm would match it
    /// against every failure.
    pub matches_empty: bool,
}

/// Match `pattern` against `log` as the farm would, and show where.
pub fn test_pattern(pattern: &str, log: &str) -> PatternTest {
    let refuse = |m: String| PatternTest { error: Some(m), ..Default::default() };
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return refuse(format!("pattern is longer than {MAX_PATTERN_CHARS} characters"));
    }
    if log.len() > MAX_TEST_BYTES {
        return refuse(format!("the pasted log is over {} KiB; paste its end", MAX_TEST_BYTES / 1024));
    }
    let re = match model::state::farm::compile(pattern) {
        Ok(re) => re,
        Err(e) => return refuse(e.message),
    };
    let starts: Vec<usize> = std::iter::once(0).chain(log.match_indices('\n').map(|(i, _)| i + 1)).collect();
    if starts.len() > MAX_TEST_LINES {
        return refuse(format!("the pasted log has more than {MAX_TEST_LINES} lines; paste its end"));
    }
    let line_of = |byte: usize| starts.partition_point(|&s| s <= byte) - 1;
    // Marked byte ranges per line, in order.
    let mut marks: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    for m in re.find_iter(log).filter(|m| !m.is_empty()) {
        let (first, last) = (line_of(m.start()), line_of(m.end() - 1));
        for l in first..=last {
            let (ls, le) = (starts[l], starts.get(l + 1).map_or(log.len(), |s| s - 1));
            let range = (m.start().max(ls) - ls, m.end().min(le).max(ls) - ls);
            match marks.last_mut() {
                Some((n, r)) if *n == l => r.push(range),
                _ => marks.push((l, vec![range])),
            }
        }
    }
    let line_text = |l: usize| {
        let end = starts.get(l + 1).map_or(log.len(), |s| s - 1);
        log[starts[l]..end].trim_end_matches('\r')
    };
    let lines = marks
        .iter()
        .take(MAX_SHOWN)
        .map(|(l, ranges)| {
            let text = line_text(*l);
            let mut segments = Vec::new();
            let mut at = 0;
            for &(s, e) in ranges {
                let (s, e) = (s.min(text.len()).max(at), e.min(text.len()));
                if s > at {
                    segments.push(Segment { text: text[at..s].to_string(), mark: false });
                }
                if e > s {
                    segments.push(Segment { text: text[s..e].to_string(), mark: true });
                    at = e;
                }
            }
            if at < text.len() {
                segments.push(Segment { text: text[at..].to_string(), mark: false });
            }
            TestLine { n: l + 1, segments }
        })
        .collect();
    PatternTest {
        error: None,
        lines,
        matched_lines: marks.len(),
        total_lines: if log.is_empty() { 0 } else { starts.len() },
        matches_empty: re.is_match(""),
    }
}

#[derive(Template)]
#[template(path = "hint_test.html")]
struct TestFragment<'a> {
    t: &'a PatternTest,
}

/// The test's answer, swapped into the dialog by the page's script.
pub fn test_fragment(t: &PatternTest) -> String {
    render(&TestFragment { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(t: &PatternTest) -> Vec<(usize, String)> {
        t.lines.iter().flat_map(|l| l.segments.iter().filter(|s| s.mark).map(move |s| (l.n, s.text.clone()))).collect()
    }

    #[test]
    fn finds_the_lines_a_match_touches_with_the_farms_compiler() {
        let log = "building lxml\r\nfatal error: libxml/xmlversion.h: No such file or directory\nok\nfatal error: a.h: No such file";
        let t = test_pattern(r"fatal error: [\w/.]+\.h: No such file", log);
        assert_eq!(t.error, None);
        assert_eq!((t.matched_lines, t.total_lines, t.matches_empty), (2, 4, false));
        assert_eq!(
            marked(&t),
            [
                (2, "fatal error: libxml/xmlversion.h: No such file".to_string()),
                (4, "fatal error: a.h: No such file".to_string())
            ]
        );
        let whole: String = t.lines[0].segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(whole, "fatal error: libxml/xmlversion.h: No such file or directory");
        // Across lines, as the farm matches the whole report.
        let t = test_pattern(r"lxml\r?\nfatal", log);
        assert_eq!(t.lines.iter().map(|l| l.n).collect::<Vec<_>>(), [1, 2]);
        // (?i) is Rust syntax a browser's RegExp would refuse.
        assert_eq!(test_pattern("(?i)FATAL ERROR", log).matched_lines, 2);
    }

    #[test]
    fn refuses_what_the_api_refuses_and_flags_empty_matches() {
        let bad = test_pattern("(unclosed", "x");
        assert!(bad.error.as_deref().is_some_and(|e| e.contains("not a valid regular expression")), "{bad:?}");
        assert!(test_pattern("", "x").error.is_some());
        assert!(test_pattern(&"a".repeat(257), "x").error.is_some());
        assert!(test_pattern(r"\W{2,4}\W{1,}\W{2,4}", "x").error.unwrap().contains("compiles to more than"));
        assert!(test_pattern("x", &"y".repeat(MAX_TEST_BYTES + 1)).error.is_some());
        assert!(test_pattern("x", &"\n".repeat(MAX_TEST_LINES + 1)).error.is_some());
        let e = test_pattern("z*", "abc\ndef");
        assert!(e.matches_empty && e.lines.is_empty() && e.error.is_none());
        let many = test_pattern("x", &"x\n".repeat(1_000));
        assert_eq!((many.lines.len(), many.matched_lines), (MAX_SHOWN, 1_000));
    }

    #[test]
    fn the_fragment_escapes_the_log() {
        let html = test_fragment(&test_pattern("script", "<script>alert(1)</script>"));
        assert!(!html.contains("<script>") && html.contains("&#60;"));
        assert!(html.contains("<mark>script</mark>"));
    }
}
