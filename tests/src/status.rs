//! The processes' HTTP status endpoints (`/health`, `/ready`, `/metrics`
//! and, in test builds, a store's fault endpoints), spoken with a minimal
//! HTTP/1.0 client.

use std::time::Duration;

/// A minimal HTTP/1.0 GET for the status endpoints: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, "").ok()
}

/// The value of one series (`name{labels}` exactly as exported) on the
/// `/metrics` page at `addr`; `None` if the page or the series is missing.
pub fn metric_value(addr: &str, series: &str) -> Option<f64> {
    let (_, page) = http_get(addr, "/metrics")?;
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal HTTP/1.0 request with a text body, one per connection, 5 s
/// timeouts: (status code, body). The status pages and, in `failpoints`
/// builds, a store's fault endpoints.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response from {addr}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
