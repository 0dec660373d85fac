//! Talking to `/raft` as a peer would: requests signed with the cluster
//! secret (written here from the wire format, apart from the node's code,
//! so a change to either side shows).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The signature header value for `method path` with `body`, sent at `time_ms`.
pub fn sign(secret: &str, method: &str, path: &str, time_ms: u64, nonce: u64, body: &[u8]) -> String {
    let nonce = format!("{nonce:016x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    let text = format!("engine-room-peer-v1\n{method}\n{path}\n{time_ms}\n{nonce}\n");
    mac.update(text.as_bytes());
    mac.update(&Sha256::digest(body));
    let tag: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1 {time_ms} {nonce} {tag}")
}

/// Wall-clock milliseconds, as the nodes read them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// POST `body` to `{url}{path}` signed with the test cluster's secret, sent
/// `skew_ms` away from now; `(status, body)`, status 0 when no answer came.
pub fn post_signed(
    http: &reqwest::blocking::Client,
    url: &str,
    path: &str,
    body: Vec<u8>,
    skew_ms: i64,
) -> (u16, Vec<u8>) {
    let at = (now_ms() as i64 + skew_ms) as u64;
    let auth = sign(crate::cluster::SECRET, "POST", path, at, rand::random(), &body);
    match http.post(format!("{url}{path}")).header("x-engine-peer-auth", auth).body(body).send() {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.bytes().map(|b| b.to_vec()).unwrap_or_default())
        }
        Err(_) => (0, Vec::new()),
    }
}
