//! Small text formatters shared by the templates.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A metric value: integers without decimals, others with up to two.
pub fn metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        if v >= 0.0 {
            thousands(v as u64)
        } else {
            format!("-{}", thousands((-v) as u64))
        }
    } else {
        format!("{v:.2}")
    }
}

/// An age in milliseconds as a short human duration: `4s`, `3m`, `2h`, `5d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m", s / 60),
        3_600..=86_399 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Age of `then_ms` at `now_ms`, with "ago"; `never` for 0.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        "never".into()
    } else {
        format!("{} ago", age(now_ms.saturating_sub(then_ms)))
    }
}

/// `then_ms` relative to `now_ms`: `in 12s` ahead, `3m ago` behind.
pub fn relative(then_ms: u64, now_ms: u64) -> String {
    if then_ms > now_ms {
        format!("in {}", age(then_ms - now_ms))
    } else {
        format!("{} ago", age(now_ms - then_ms))
    }
}

/// The first `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    let c = cut(s, max);
    if c.len() < s.len() {
        format!("{c}…")
    } else {
        c.to_string()
    }
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(ms: u64) -> String {
    let (y, m, d, h, mi, s, _) = model::views::utc_fields(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_ages_and_dates() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(metric(1200.0), "1,200");
        assert_eq!(metric(0.126), "0.13");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(3_600_000), "1h");
        assert_eq!(ago(0, 5), "never");
        assert_eq!(ago(1_000, 181_000), "3m ago");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_764_118_800_000), "2025-11-26 01:00:00");
        assert_eq!(relative(72_000, 60_000), "in 12s");
        assert_eq!(relative(60_000, 240_000), "3m ago");
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("", 0), "");
        assert_eq!(cut("héllo", 2), "hé");
    }
}
