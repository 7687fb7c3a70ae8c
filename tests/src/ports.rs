//! Ports for the processes a test starts: free now, and reserved across
//! the test binaries running at the same time.

/// A port that is free now, chosen below Linux's ephemeral range (32768
/// and up) so that no outgoing connection takes it before the process we
/// start binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread processes (and parallel test binaries) over the range.
    let seed = (std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0))
        % 12_000;
    let _ = NEXT.compare_exchange(0, 20_000 + seed as u16, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = if port >= 32_000 {
            NEXT.store(20_001, Ordering::SeqCst);
            20_000
        } else {
            port
        };
        if reserve_port(port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How long a port handed out by [`free_port`] stays reserved for the test
/// process that took it: longer than any test runs.
const PORT_RESERVATION: std::time::Duration = std::time::Duration::from_secs(600);

/// Reserves `port` across test processes: a file created exclusively in a
/// shared directory. Probing with `bind` alone let two test binaries
/// started together hand out the same ports (each probed before either
/// process bound them). A reservation older than [`PORT_RESERVATION`] is
/// taken over.
fn reserve_port(port: u16) -> bool {
    use std::fs::OpenOptions;
    let dir = std::env::temp_dir().join("tessera-e2e-ports");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > PORT_RESERVATION);
    stale && std::fs::remove_file(&path).is_ok() && create()
}
