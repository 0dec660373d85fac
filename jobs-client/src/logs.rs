//! A job's log lines between two lease renewals: bounded in lines and bytes,
//! each line cut to the server's line cap. Lines past the buffer's caps are
//! dropped and counted; the next batch says how many, so a reader of the
//! job's log sees the gap instead of silently missing lines.

use std::collections::VecDeque;

/// The server's cap on one line (`MAX_LOG_LINE`, 4 KiB).
pub const MAX_LINE_BYTES: usize = 4096;

/// Caps of one job's buffer.
#[derive(Debug, Clone, Copy)]
pub struct LogCaps {
    /// Lines held at most between two sends.
    pub max_lines: usize,
    /// Bytes held at most between two sends.
    pub max_bytes: usize,
    /// Lines sent in one renew, complete or fail call.
    pub max_lines_per_call: usize,
}

impl Default for LogCaps {
    fn default() -> Self {
        Self { max_lines: 2_000, max_bytes: 512 * 1024, max_lines_per_call: 500 }
    }
}

#[derive(Debug)]
pub struct LogBuffer {
    caps: LogCaps,
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines dropped since the last batch was taken.
    dropped: u64,
    /// Lines dropped over the job's life.
    pub dropped_total: u64,
    /// The server said its per-job cap is reached: keep nothing more.
    closed: bool,
}

/// `line` cut to at most `max` bytes, at a char boundary.
pub fn cut(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

impl LogBuffer {
    pub fn new(caps: LogCaps) -> Self {
        Self { caps, lines: VecDeque::new(), bytes: 0, dropped: 0, dropped_total: 0, closed: false }
    }

    /// Add one line (cut to [`MAX_LINE_BYTES`]); false when it was dropped.
    pub fn push(&mut self, line: &str) -> bool {
        let line = cut(line.trim_end_matches(['\n', '\r']), MAX_LINE_BYTES);
        if self.closed || self.lines.len() >= self.caps.max_lines || self.bytes + line.len() > self.caps.max_bytes {
            self.dropped += 1;
            self.dropped_total += 1;
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_string());
        true
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }

    /// The next batch for one call: up to `max_lines_per_call` lines from the
    /// front, preceded by a note of lines dropped since the last batch. Put
    /// back with [`LogBuffer::put_back`] if the call fails.
    pub fn take_batch(&mut self) -> Vec<String> {
        let mut batch = Vec::new();
        if self.closed {
            self.dropped = 0;
            return batch;
        }
        if self.dropped > 0 {
            batch.push(format!("[engine-room worker: {} log line(s) dropped: buffer full]", self.dropped));
            self.dropped = 0;
        }
        while batch.len() < self.caps.max_lines_per_call {
            match self.lines.pop_front() {
                Some(l) => {
                    self.bytes -= l.len();
                    batch.push(l);
                }
                None => break,
            }
        }
        batch
    }

    /// Return an unsent batch to the front (the call failed on every node).
    /// Lines that no longer fit are dropped and counted.
    pub fn put_back(&mut self, batch: Vec<String>) {
        for line in batch.into_iter().rev() {
            if line.starts_with("[engine-room worker: ") && line.ends_with("dropped: buffer full]") {
                // The note is rebuilt from the count instead.
                let n: u64 = line
                    .trim_start_matches("[engine-room worker: ")
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                self.dropped += n;
                continue;
            }
            if self.lines.len() >= self.caps.max_lines || self.bytes + line.len() > self.caps.max_bytes {
                self.dropped += 1;
                self.dropped_total += 1;
                continue;
            }
            self.bytes += line.len();
            self.lines.push_front(line);
        }
    }

    /// The server accepted `accepted` of a batch of `sent` lines: fewer means
    /// its per-job cap is reached, so the buffer stops keeping lines.
    pub fn accepted(&mut self, accepted: u32, sent: usize) {
        if (accepted as usize) < sent {
            self.closed = true;
            let lost = (sent - accepted as usize) as u64 + self.lines.len() as u64;
            self.dropped_total += lost;
            self.lines.clear();
            self.bytes = 0;
            self.dropped = 0;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(lines: usize, bytes: usize, per_call: usize) -> LogCaps {
        LogCaps { max_lines: lines, max_bytes: bytes, max_lines_per_call: per_call }
    }

    #[test]
    fn lines_past_the_line_cap_are_dropped_and_reported() {
        let mut b = LogBuffer::new(caps(3, 1 << 20, 10));
        for i in 0..5 {
            b.push(&format!("line {i}"));
        }
        assert_eq!(b.len(), 3);
        let batch = b.take_batch();
        assert_eq!(batch[0], "[engine-room worker: 2 log line(s) dropped: buffer full]");
        assert_eq!(&batch[1..], ["line 0", "line 1", "line 2"]);
        assert!(b.is_empty());
        assert_eq!(b.dropped_total, 2);
    }

    #[test]
    fn byte_cap_and_long_lines_are_bounded() {
        let mut b = LogBuffer::new(caps(100, 10_000, 100));
        let long = "é".repeat(5000); // 10,000 bytes
        assert!(b.push(&long));
        assert_eq!(b.take_batch()[0].len(), 4096, "2-byte chars cut at 4096 exactly");
        assert!(b.push(&"x".repeat(4000)));
        assert!(b.push(&"x".repeat(4000)));
        assert!(!b.push(&"x".repeat(4000)), "over the byte cap");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn batches_are_capped_and_put_back_in_order() {
        let mut b = LogBuffer::new(caps(10, 1 << 20, 2));
        for i in 0..5 {
            b.push(&format!("{i}"));
        }
        let first = b.take_batch();
        assert_eq!(first, ["0", "1"]);
        b.put_back(first);
        assert_eq!(b.take_batch(), ["0", "1"]);
        assert_eq!(b.take_batch(), ["2", "3"]);
        assert_eq!(b.take_batch(), ["4"]);
        assert!(b.take_batch().is_empty());
    }

    #[test]
    fn put_back_keeps_the_dropped_count() {
        let mut b = LogBuffer::new(caps(1, 1 << 20, 10));
        b.push("a");
        b.push("b");
        let batch = b.take_batch();
        assert_eq!(batch.len(), 2);
        b.put_back(batch);
        assert_eq!(b.take_batch(), ["[engine-room worker: 1 log line(s) dropped: buffer full]", "a"]);
    }

    #[test]
    fn server_cap_closes_the_buffer() {
        let mut b = LogBuffer::new(caps(10, 1 << 20, 10));
        b.push("a");
        b.push("b");
        let batch = b.take_batch();
        b.push("c");
        b.accepted(1, batch.len());
        assert!(b.is_closed());
        assert!(!b.push("d"));
        assert!(b.take_batch().is_empty(), "nothing more is sent");
        assert_eq!(cut("abc", 2), "ab");
    }
}
