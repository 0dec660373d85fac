//! Real notification endpoints for tests, on loopback: a webhook receiver (a
//! small HTTP/1.1 server on a thread that records every POST and can fail the
//! first N with 500) and an SMTP receiver (Python aiosmtpd as a child process
//! that appends each message to a JSON-lines file).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Wall-clock arrival time, Unix milliseconds.
    pub at_ms: u64,
    pub peer: SocketAddr,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Status the receiver answered.
    pub status: u16,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Shared {
    got: Mutex<Vec<Delivery>>,
    fail_first: AtomicUsize,
    /// Only requests whose body contains this count against `fail_first`.
    fail_matching: Mutex<Option<String>>,
    /// Hold the answer to requests whose body contains the text: (text, how many, how long).
    hold: Mutex<Option<(String, usize, Duration)>>,
    stop: AtomicBool,
}

/// An HTTP receiver standing in for a Slack incoming webhook.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    /// Listen on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        let addr = listener.local_addr().expect("bound listener has an address");
        let shared = Arc::new(Shared {
            got: Mutex::default(),
            fail_first: AtomicUsize::new(0),
            fail_matching: Mutex::default(),
            hold: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(conn, &s));
                }
            }
        });
        WebhookReceiver { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/engine-room", self.addr)
    }

    /// Answer the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        *self.shared.fail_matching.lock().expect("receiver lock") = None;
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    /// Answer the next `n` requests whose body contains `needle` with 500
    /// (other notifications, such as a node_down at startup, pass).
    pub fn fail_next_matching(&self, n: usize, needle: &str) {
        *self.shared.fail_matching.lock().expect("receiver lock") = Some(needle.to_string());
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    /// Record the next `n` requests whose body contains `needle` at once but
    /// answer them only after `delay` (a sender that dies meanwhile never
    /// learns that its message arrived).
    pub fn hold_next_matching(&self, n: usize, needle: &str, delay: Duration) {
        *self.shared.hold.lock().expect("receiver lock") = Some((needle.to_string(), n, delay));
    }

    /// Everything received so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.got.lock().expect("receiver lock").clone()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| d.status == 200).collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Serve keep-alive HTTP/1.1 requests on one connection until it closes.
fn serve(conn: TcpStream, s: &Shared) {
    let peer = match conn.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    while !s.stop.load(Ordering::SeqCst) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let matches = match s.fail_matching.lock().expect("receiver lock").as_deref() {
            Some(needle) => String::from_utf8_lossy(&body).contains(needle),
            None => true,
        };
        let fail =
            matches && s.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let status = if method != "POST" {
            405
        } else if fail {
            500
        } else {
            200
        };
        let delay = {
            let mut hold = s.hold.lock().expect("receiver lock");
            match hold.as_mut() {
                Some((needle, n, d)) if *n > 0 && String::from_utf8_lossy(&body).contains(needle.as_str()) => {
                    *n -= 1;
                    Some(*d)
                }
                _ => None,
            }
        };
        s.got.lock().expect("receiver lock").push(Delivery { at_ms: unix_ms(), peer, path, headers, body, status });
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let text = if status == 200 { "ok" } else { "failing on purpose" };
        let res =
            format!("HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}", text.len());
        if writer.write_all(res.as_bytes()).is_err() {
            return;
        }
    }
}

/// Wall clock in Unix milliseconds (what the nodes stamp their entries with).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Records each message as one JSON line: {"mail_from", "rcpt_tos", "data", "at"}.
const SMTP_SCRIPT: &str = r#"
import asyncio, json, sys, time
from aiosmtpd.controller import Controller

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Record:
    async def handle_DATA(self, server, session, envelope):
        line = json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                           "data": envelope.content.decode("utf-8", "replace"), "at": time.time()})
        with open(out, "a") as f:
            f.write(line + "\n")
            f.flush()
        return "250 OK"

c = Controller(Record(), hostname=host, port=port)
c.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    c.stop()
"#;

/// One message the SMTP receiver accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Arrival time, Unix milliseconds.
    pub at_ms: u64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The whole message as received (headers and body).
    pub data: String,
}

impl Mail {
    /// First header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for line in self.data.lines() {
            if line.is_empty() {
                break;
            }
            if let Some(f) = found.as_mut() {
                if line.starts_with([' ', '\t']) {
                    f.push(' ');
                    f.push_str(line.trim());
                    continue;
                }
                return found;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    found = Some(v.trim().to_string());
                }
            }
        }
        found
    }

    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").or_else(|| self.data.split_once("\n\n")).map(|(_, b)| b).unwrap_or("")
    }
}

/// A real SMTP server (aiosmtpd) on a loopback port, killed by pid on drop.
pub struct SmtpReceiver {
    pub port: u16,
    child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Make sure `aiosmtpd` is importable, installing it from PyPI if needed.
pub fn ensure_aiosmtpd() {
    let importable =
        || Command::new("python3").args(["-c", "import aiosmtpd"]).status().map(|s| s.success()).unwrap_or(false);
    if importable() {
        return;
    }
    let _ = Command::new("python3").args(["-m", "pip", "install", "--quiet", "aiosmtpd"]).status();
    assert!(importable(), "python3 with aiosmtpd is needed (python3 -m pip install aiosmtpd)");
}

impl SmtpReceiver {
    pub fn start() -> Self {
        ensure_aiosmtpd();
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("smtp_receiver.py");
        std::fs::write(&script, SMTP_SCRIPT).expect("write smtp script");
        let file = dir.path().join("mail.jsonl");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
            l.local_addr().expect("bound listener has an address").port()
        };
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 smtp receiver");
        let mut ready = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut ready);
        let r = SmtpReceiver { port, child, file, _dir: dir };
        assert_eq!(ready.trim(), "ready", "smtp receiver did not start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp receiver not listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Mail> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Mail {
                at_ms: (v["at"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
                mail_from: v["mail_from"].as_str().unwrap_or_default().to_string(),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                data: v["data"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
