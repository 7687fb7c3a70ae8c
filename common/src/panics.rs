//! What a panic does in a tessera process: it aborts the process, except
//! inside [`contain`].
//!
//! A component that panicked (the Raft poller above all) cannot make
//! progress safely, and a restart recovers from disk — so any panic aborts.
//! The one exception is a call the caller knows how to recover from
//! without the process: the poller steps a message from another node
//! inside [`contain`], and if raft-rs panics on it (an assertion a hostile
//! message tripped), reloads that one region from its durable state and
//! goes on. The panic is still logged.

use std::cell::Cell;

thread_local! {
    /// Whether this thread is inside [`contain`].
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Makes any panic outside [`contain`] stop the process.
pub fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        if !CONTAINED.with(|c| c.get()) {
            std::process::abort();
        }
    }));
}

/// Runs `f`, returning a panic in it as an `Err` instead of aborting. Only
/// for calls whose every effect the caller discards when they panic.
pub fn contain<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(outer));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_comes_back_as_an_error_and_the_flag_is_restored() {
        let r = contain(|| -> u32 { panic!("tripped") });
        assert!(r.is_err());
        assert!(!CONTAINED.with(|c| c.get()));
        assert_eq!(contain(|| contain(|| 7).unwrap()).unwrap(), 7);
        assert!(!CONTAINED.with(|c| c.get()));
    }
}
