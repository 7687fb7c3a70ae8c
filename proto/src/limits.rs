//! Limits on what one request may ask and one response may hold, shared by
//! the stores, the routers and the SDK: how many keys a batch names, how
//! long a keyspace name is, and the response budget that turns a Scan or a
//! BatchGet into pages. (Key and value sizes belong to the key space, in
//! [`crate::keys`].)
//!
//! A page always holds at least one pair, however large, so it passes its
//! budget by at most one key and value; any other pair that would pass it
//! waits for the next page. Whoever stops a page says where the next one
//! starts.

/// The most keys (BatchGet) or pairs (BatchPut) one request may carry. A
/// BatchGet answers each distinct key once, so naming a key twice costs
/// nothing, but every key named is checked and routed.
pub const MAX_BATCH_KEYS: usize = 10_000;
/// The longest keyspace name, in bytes.
pub const MAX_KEYSPACE_NAME_BYTES: usize = 128;
/// The bytes of keys and values one page of a Scan or BatchGet answer
/// holds, by default, before it stops and says where to continue. A page
/// always holds at least one pair, so it may pass this by one pair (at
/// most [`MAX_KEY_BYTES`](crate::keys::MAX_KEY_BYTES) +
/// [`MAX_VALUE_BYTES`](crate::keys::MAX_VALUE_BYTES)).
pub const RESPONSE_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The oldest state a stale read may ask for, in milliseconds (an hour):
/// what a replica learned from its leader longer ago than that is no use.
pub const MAX_STALENESS_MS: u64 = 3_600_000;

/// Checks a stale read's age bound: at least 1 ms, at most
/// [`MAX_STALENESS_MS`].
pub fn validate_staleness_ms(ms: u64) -> Result<(), String> {
    if (1..=MAX_STALENESS_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "a stale read's age bound is {ms} ms: it must be 1 to {MAX_STALENESS_MS} ms"
        ))
    }
}

/// The bytes of one response page, counted against its budget.
#[derive(Clone, Debug)]
pub struct PageBudget {
    left: usize,
    empty: bool,
}

impl PageBudget {
    pub fn new(bytes: usize) -> Self {
        PageBudget {
            left: bytes,
            empty: true,
        }
    }

    /// Whether a pair of `bytes` (key and value) joins the page: the first
    /// always does; a later one only while the budget holds it. A pair
    /// refused ends the page, and the next page starts with it.
    pub fn admit(&mut self, bytes: usize) -> bool {
        if !self.empty && bytes > self.left {
            self.left = 0;
            return false;
        }
        self.empty = false;
        self.left = self.left.saturating_sub(bytes);
        true
    }

    /// The bytes left before the budget is reached.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Whether the page is full: nothing more joins it.
    pub fn is_full(&self) -> bool {
        !self.empty && self.left == 0
    }
}

/// Checks a keyspace name: 1 to [`MAX_KEYSPACE_NAME_BYTES`] bytes, no
/// control characters. (`default` is a valid name: the default keyspace.)
pub fn validate_keyspace_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("keyspace name is empty".into());
    }
    if name.len() > MAX_KEYSPACE_NAME_BYTES {
        return Err(format!(
            "keyspace name is {} bytes; the limit is {MAX_KEYSPACE_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("keyspace name {name:?} holds a control character"));
    }
    Ok(())
}

/// Checks a configured response budget (`max_response_bytes` of stores and
/// routers): from 64 KiB, so a page is worth a round trip, to 64 MiB, so a
/// page and one maximal value fit one gRPC message.
pub fn validate_page_bytes(bytes: usize) -> Result<(), String> {
    const MIN: usize = 64 * 1024;
    const MAX: usize = 64 * 1024 * 1024;
    if !(MIN..=MAX).contains(&bytes) {
        return Err(format!(
            "max_response_bytes must be between {MIN} and {MAX}, not {bytes}"
        ));
    }
    Ok(())
}

/// Checks the size of a batch against [`MAX_BATCH_KEYS`].
pub fn validate_batch_len(n: usize) -> Result<(), String> {
    if n > MAX_BATCH_KEYS {
        return Err(format!(
            "the batch names {n} keys; the limit is {MAX_BATCH_KEYS}"
        ));
    }
    Ok(())
}

/// The metadata key of a busy refusal: how long, in milliseconds, the
/// server asks the caller to wait before trying again.
pub const RETRY_AFTER_MS: &str = "tessera-retry-after-ms";

/// A refusal by a server over one of its quotas (TiKV's `ServerIsBusy`):
/// gRPC `RESOURCE_EXHAUSTED`, saying what is exhausted, with the wait it
/// asks for in [`RETRY_AFTER_MS`]. The server refused the request before
/// it ran, so nothing of it was applied and it may be sent again.
pub fn busy_status(message: impl Into<String>, retry_after: std::time::Duration) -> tonic::Status {
    let mut status = tonic::Status::resource_exhausted(message);
    let ms = retry_after.as_millis().max(1).to_string();
    if let Ok(value) = ms.parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}

/// The wait a busy refusal ([`busy_status`]) asks for, or `None` when
/// `status` is not one. `RESOURCE_EXHAUSTED` without the metadata (gRPC's
/// own, say) is not a busy refusal: it proves nothing about whether the
/// request ran.
pub fn busy_retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms.clamp(1, 60_000)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_busy_refusal_carries_its_wait_and_nothing_else_counts_as_one() {
        let busy = busy_status(
            "in-flight bytes over quota",
            std::time::Duration::from_millis(70),
        );
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            busy_retry_after(&busy),
            Some(std::time::Duration::from_millis(70))
        );
        // Through the wire format and back.
        let mut headers = tonic::codegen::http::HeaderMap::new();
        busy.add_header(&mut headers).unwrap();
        let back = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(
            busy_retry_after(&back),
            Some(std::time::Duration::from_millis(70))
        );
        assert_eq!(
            busy_retry_after(&tonic::Status::resource_exhausted("too large")),
            None
        );
        let mut other = tonic::Status::unavailable("x");
        other
            .metadata_mut()
            .insert(RETRY_AFTER_MS, "5".parse().unwrap());
        assert_eq!(busy_retry_after(&other), None);
        let mut garbage = tonic::Status::resource_exhausted("x");
        garbage
            .metadata_mut()
            .insert(RETRY_AFTER_MS, "soon".parse().unwrap());
        assert_eq!(busy_retry_after(&garbage), None);
    }

    use super::*;

    #[test]
    fn limits_and_pages() {
        assert!(validate_batch_len(MAX_BATCH_KEYS).is_ok());
        assert!(validate_batch_len(MAX_BATCH_KEYS + 1)
            .unwrap_err()
            .contains("the limit is 10000"));
        assert!(validate_page_bytes(RESPONSE_PAGE_BYTES).is_ok());
        assert!(validate_page_bytes(1000).is_err());
        assert!(validate_page_bytes(1 << 30).is_err());
        assert!(validate_keyspace_name("users").is_ok());
        assert!(validate_keyspace_name(&"x".repeat(MAX_KEYSPACE_NAME_BYTES)).is_ok());
        assert!(validate_keyspace_name(&"x".repeat(MAX_KEYSPACE_NAME_BYTES + 1)).is_err());
        assert!(validate_keyspace_name("").is_err());
        assert!(validate_staleness_ms(1).is_ok());
        assert!(validate_staleness_ms(MAX_STALENESS_MS).is_ok());
        assert!(validate_staleness_ms(0).is_err());
        assert!(validate_staleness_ms(MAX_STALENESS_MS + 1)
            .unwrap_err()
            .contains("1 to 3600000 ms"));
        assert!(validate_keyspace_name("a\nb").is_err());
        let mut page = PageBudget::new(10);
        assert!(page.admit(25), "the first pair joins even past the budget");
        assert!(page.is_full());
        assert!(!page.admit(1));
        let mut page = PageBudget::new(10);
        assert!(page.admit(4) && page.admit(6) && page.is_full());
        let mut page = PageBudget::new(10);
        assert!(
            page.admit(4) && !page.admit(7),
            "a pair past the budget waits"
        );
        assert!(page.is_full());
    }
}
