//! The build log viewer: one build's log (package, version) a page at a
//! time, or the lines matching a search, with the lines that match the hints
//! recorded on the build's latest failure highlighted. The farm matched those
//! hints against the failure report (its error and the log tail it carried);
//! here each stored line is matched on its own against the same patterns, so
//! a pattern that spans lines highlights nothing. Search is a substring,
//! case-insensitive for ASCII, like `/logs/search`.

use askama::Template;

use crate::builds::EventRow;
use crate::format::utc;
use crate::pages::{encode, render, Chrome};

/// Lines one page shows (the store's largest read).
pub const PAGE_LINES: u64 = 1_000;
/// Search hits one page shows.
pub const MAX_HITS: usize = 500;
/// Longest search text (as `/logs/search`).
pub const MAX_Q: usize = 256;

/// A run of a line's text, marked when it is a search hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub mark: bool,
}

/// Whether `needle` occurs in `hay`, ignoring ASCII case.
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    !needle.is_empty() && find_ci(hay, needle, 0).is_some()
}

fn find_ci(hay: &str, needle: &str, from: usize) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (from..=h.len().checked_sub(n.len())?).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// `text` cut into runs, the occurrences of `q` (ASCII case-insensitive) marked.
pub fn segments(text: &str, q: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0;
    if !q.is_empty() {
        while let Some(i) = find_ci(text, q, at) {
            // A match of ASCII-folded bytes starts and ends on char boundaries
            // only if the needle does; check rather than assume.
            let end = i + q.len();
            if !text.is_char_boundary(i) || !text.is_char_boundary(end) {
                break;
            }
            if i > at {
                out.push(Segment { text: text[at..i].to_string(), mark: false });
            }
            out.push(Segment { text: text[i..end].to_string(), mark: true });
            at = end;
        }
    }
    if at < text.len() || out.is_empty() {
        out.push(Segment { text: text[at..].to_string(), mark: false });
    }
    out
}

/// A hint of the build's latest failure, as the viewer lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct HintRef {
    pub id: u64,
    /// Empty when the hint was deleted since.
    pub pattern: String,
    pub note: String,
    /// Lines of this page it matched.
    pub lines: usize,
}

/// One shown log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// From 1, as people count lines (the API counts from 0).
    pub n: u64,
    pub at: String,
    pub segments: Vec<Segment>,
    /// Ids of the failure's hints whose pattern matches this line.
    pub hints: Vec<u64>,
}

impl LogRow {
    pub fn hints_attr(&self) -> String {
        self.hints.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
    }
}

/// A line as read from the store: number (from 0), time, text.
pub type StoredLine = (u64, u64, String);

/// What the viewer shows.
#[derive(Debug, Clone, PartialEq)]
pub struct LogView {
    pub package: String,
    pub version: String,
    pub total_lines: u64,
    pub q: String,
    /// First line of the page (from 0), without a search.
    pub from: u64,
    pub rows: Vec<LogRow>,
    /// The build's latest event, and the hints of its latest failure.
    pub event: Option<EventRow>,
    pub hints: Vec<HintRef>,
    /// A search: lines looked at, and whether it covered the whole log.
    pub scanned: u64,
    pub complete: bool,
}

impl LogView {
    /// Build the rows: `matcher(text)` gives the ids of the hints a line matches.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        package: &str,
        version: &str,
        total_lines: u64,
        q: &str,
        from: u64,
        lines: Vec<StoredLine>,
        matcher: &dyn Fn(&str) -> Vec<u64>,
        mut hints: Vec<HintRef>,
        event: Option<EventRow>,
        (scanned, complete): (u64, bool),
    ) -> Self {
        let rows: Vec<LogRow> = lines
            .into_iter()
            .map(|(n, at_ms, text)| {
                let matched = matcher(&text);
                LogRow { n: n + 1, at: utc(at_ms), segments: segments(&text, q), hints: matched }
            })
            .collect();
        for h in &mut hints {
            h.lines = rows.iter().filter(|r| r.hints.contains(&h.id)).count();
        }
        LogView {
            package: package.into(),
            version: version.into(),
            total_lines,
            q: q.into(),
            from,
            rows,
            event,
            hints,
            scanned,
            complete,
        }
    }

    /// The viewer's own path (names encoded).
    pub fn path(&self) -> String {
        format!("{}/logs/{}/{}", crate::BASE, encode(&self.package), encode(&self.version))
    }

    /// Where the earlier page starts, when there is one (no search).
    pub fn earlier(&self) -> Option<u64> {
        (self.q.is_empty() && self.from > 0).then(|| self.from.saturating_sub(PAGE_LINES))
    }

    /// Where the later page starts, when there is one (no search).
    pub fn later(&self) -> Option<u64> {
        let next = self.from + self.rows.len() as u64;
        (self.q.is_empty() && next < self.total_lines).then_some(next)
    }

    /// The number (from 1) of the page's last line.
    pub fn last_shown(&self) -> u64 {
        self.rows.last().map_or(self.from, |r| r.n)
    }

    /// Lines of the page that match a hint.
    pub fn highlighted(&self) -> usize {
        self.rows.iter().filter(|r| !r.hints.is_empty()).count()
    }
}

/// The page of a log shown without a search: `from`, or the last page.
pub fn first_line(total: u64, from: Option<u64>) -> u64 {
    match from {
        Some(f) => f.min(total.saturating_sub(1)),
        None => total.saturating_sub(PAGE_LINES),
    }
}

#[derive(Template)]
#[template(path = "build_log.html")]
struct LogPage<'a> {
    chrome: &'a Chrome,
    v: &'a LogView,
}

/// The log viewer page.
pub fn log_page(chrome: &Chrome, v: &LogView) -> String {
    render(&LogPage { chrome, v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_marks_every_occurrence_ignoring_ascii_case() {
        let s = segments("Error: ERROR again", "error");
        let marked: Vec<_> = s.iter().filter(|x| x.mark).map(|x| x.text.as_str()).collect();
        assert_eq!(marked, ["Error", "ERROR"]);
        assert_eq!(s.iter().map(|x| x.text.as_str()).collect::<String>(), "Error: ERROR again");
        assert_eq!(segments("plain", ""), vec![Segment { text: "plain".into(), mark: false }]);
        assert_eq!(segments("", "x"), vec![Segment { text: "".into(), mark: false }]);
        assert_eq!(segments("héllo héllo", "llo").iter().filter(|x| x.mark).count(), 2);
        assert!(contains_ci("fatal ERROR", "error") && !contains_ci("abc", "") && !contains_ci("ab", "abc"));
    }

    #[test]
    fn rows_carry_the_hints_they_match_and_paging_is_bounded() {
        let lines = vec![(0, 1_000, "compiling".to_string()), (1, 2_000, "fatal error: x.h: No such file".to_string())];
        let matcher = |t: &str| if t.contains("No such file") { vec![7] } else { vec![] };
        let hints = vec![HintRef { id: 7, pattern: "No such".into(), note: String::new(), lines: 0 }];
        let v = LogView::new("lxml", "5.2.2", 2, "", 0, lines, &matcher, hints, None, (0, true));
        assert_eq!(v.rows[1].hints, [7]);
        assert_eq!((v.rows[1].n, v.highlighted(), v.hints[0].lines), (2, 1, 1));
        assert_eq!((v.earlier(), v.later()), (None, None));
        assert_eq!(v.path(), "/verifier-engine-room/logs/lxml/5.2.2");
        assert_eq!(first_line(5_000, None), 4_000, "the last page by default");
        assert_eq!(first_line(10, None), 0);
        assert_eq!(first_line(10, Some(99)), 9);
        let mid = LogView { from: 1_000, total_lines: 5_000, rows: vec![], ..v };
        assert_eq!((mid.earlier(), mid.later()), (Some(0), Some(1_000)));
    }
}
