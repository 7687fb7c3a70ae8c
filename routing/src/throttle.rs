//! Client-side adaptive throttling: a client that sees its server refuse
//! most of what it sends stops sending most of it, so refusals cost the
//! client almost nothing and the server almost nothing.
//!
//! Under overload a server that refuses at once still spends CPU on every
//! refused request: the connection's TLS and HTTP/2 work, decoding the
//! headers, encoding the refusal. At ten times a cluster's capacity that
//! work alone can take the cores the admitted requests need, and goodput
//! falls although every refusal is "cheap". The remedy is the one in
//! Google's SRE book ("Handling Overload", client-side throttling): each
//! client counts, over a sliding window, the requests it *tried*
//! (`requests`, what it sent plus what it held back) and those the server
//! *accepted* (`accepts`, answered with anything but a busy refusal), and
//! holds back each new request with
//! probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! where `K` is the [`Throttle`]'s ratio. While the server accepts at least
//! 1/K of what is tried, `p` is 0 and nothing changes; past that the client
//! sends about K × what the server accepts and answers the rest itself, at
//! once, as the same busy refusal. Because `p < 1` always, some requests
//! still go out, and as soon as the server accepts them again `p` falls:
//! the throttle probes by itself and, once the overload ends, ramps back
//! up — each accept lowers `p` — to sending everything within a window or
//! two (the refusals must leave the window, and with them the requests
//! held back while they were in it).
//!
//! Invariants: a held-back request was never sent, so it is a refusal in
//! the strictest sense (nothing applied, safe to retry, reads and writes
//! alike). Outcomes that say nothing about load — a connection that could
//! not be made, a server that answered "unavailable", no answer at all —
//! are not counted, so a dead or hung server is failover's business, not
//! the throttle's; a server over its quotas says so by refusing (the
//! serving quotas refuse what would otherwise queue until a deadline).
//!
//! The draw is deterministic: the fractions `p` of successive requests
//! accumulate, and a request is held back each time the sum passes 1.
//! Over any stretch of requests the share held back is the average `p`,
//! without the bursts of a random draw, and tests are exact.

use std::time::Duration;

use parking_lot::Mutex;
use std::time::Instant;

/// How many slices the window is cut into; the oldest is dropped whole.
const SLICES: usize = 10;

/// The default window: long enough to average a burst, short enough that
/// a client stops throttling within seconds of an overload's end.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

/// The default ratio `K`: the SRE book's 2, sending up to twice what the
/// server accepts so it sees demand above its capacity and can take more
/// as soon as it frees up.
pub const DEFAULT_RATIO: f64 = 2.0;

/// Counts of one slice of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    requests: u64,
    accepts: u64,
}

#[derive(Debug)]
struct State {
    slices: [Slice; SLICES],
    /// Index of the current slice.
    current: usize,
    /// When the current slice began.
    since: Instant,
    /// The accumulated `p` of requests not yet held back (error diffusion).
    debt: f64,
}

/// Why a request was held back, for the error a caller reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldBack {
    /// Requests tried within the window, this one included.
    pub requests: u64,
    /// Of those, the ones the server accepted.
    pub accepts: u64,
    /// The share of new requests being held back.
    pub probability: f64,
    /// The window the counts cover.
    pub window: Duration,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "held back by this client's throttle, not sent: the servers accepted {} of the \
             last {} requests (within {:?}), so {:.0}% of new ones are held back until they \
             accept more",
            self.accepts,
            self.requests,
            self.window,
            self.probability * 100.0
        )
    }
}

/// A client's adaptive throttle (see the module docs). Cheap to consult:
/// one short lock per request.
#[derive(Debug)]
pub struct Throttle {
    ratio: f64,
    slice: Duration,
    state: Mutex<State>,
}

impl Throttle {
    /// A throttle with ratio `K` (at least 1: a smaller one would hold
    /// back requests of a server that accepts everything) over `window`
    /// (at least 10 ms). Returns `None` for a ratio or window out of range.
    pub fn new(ratio: f64, window: Duration) -> Option<Throttle> {
        if !(ratio.is_finite() && ratio >= 1.0) || window < Duration::from_millis(10) {
            return None;
        }
        Some(Throttle {
            ratio,
            slice: window / SLICES as u32,
            state: Mutex::new(State {
                slices: [Slice::default(); SLICES],
                current: 0,
                since: Instant::now(),
                debt: 0.0,
            }),
        })
    }

    /// Decides whether to send the next request: `Ok` to send it (report
    /// its outcome with [`Throttle::record`]), or why it is held back —
    /// then it is already counted as tried and not accepted.
    pub fn admit(&self) -> Result<(), HeldBack> {
        self.admit_at(Instant::now())
    }

    /// Counts a request the server answered: `accepted` unless it refused
    /// it as busy. Leave out outcomes that say nothing of load (see the
    /// module docs).
    pub fn record(&self, accepted: bool) {
        self.record_at(Instant::now(), accepted)
    }

    fn admit_at(&self, now: Instant) -> Result<(), HeldBack> {
        let mut s = self.state.lock();
        self.advance(&mut s, now);
        let (requests, accepts) = totals(&s);
        let excess = requests as f64 - self.ratio * accepts as f64;
        if excess <= 0.0 {
            s.debt = 0.0;
            return Ok(());
        }
        let p = excess / (requests as f64 + 1.0);
        s.debt += p;
        if s.debt < 1.0 {
            return Ok(());
        }
        s.debt -= 1.0;
        let current = s.current;
        s.slices[current].requests += 1;
        Err(HeldBack {
            requests: requests + 1,
            accepts,
            probability: p,
            window: self.slice * SLICES as u32,
        })
    }

    fn record_at(&self, now: Instant, accepted: bool) {
        let mut s = self.state.lock();
        self.advance(&mut s, now);
        let current = s.current;
        s.slices[current].requests += 1;
        if accepted {
            s.slices[current].accepts += 1;
        }
    }

    /// Moves the window to now, emptying the slices that fell out of it.
    fn advance(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.since);
        if elapsed < self.slice {
            return;
        }
        let steps = (elapsed.as_nanos() / self.slice.as_nanos()).min(SLICES as u128) as usize;
        for _ in 0..steps {
            s.current = (s.current + 1) % SLICES;
            s.slices[s.current] = Slice::default();
        }
        // Keep the slices aligned to their period, not to this call.
        s.since = if steps == SLICES {
            now
        } else {
            s.since + self.slice * steps as u32
        };
    }
}

fn totals(s: &State) -> (u64, u64) {
    s.slices.iter().fold((0, 0), |(r, a), slice| {
        (r + slice.requests, a + slice.accepts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throttle and the time its tests run at.
    struct Clock {
        t: Throttle,
        now: Instant,
    }

    impl Clock {
        fn new(window: Duration) -> Clock {
            Clock {
                t: Throttle::new(DEFAULT_RATIO, window).unwrap(),
                now: Instant::now(),
            }
        }
        fn admit(&self) -> Result<(), HeldBack> {
            self.t.admit_at(self.now)
        }
        fn record(&self, accepted: bool) {
            self.t.record_at(self.now, accepted)
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Throttle::new(0.5, DEFAULT_WINDOW).is_none());
        assert!(Throttle::new(f64::NAN, DEFAULT_WINDOW).is_none());
        assert!(Throttle::new(f64::INFINITY, DEFAULT_WINDOW).is_none());
        assert!(Throttle::new(2.0, Duration::from_millis(1)).is_none());
        assert!(Throttle::new(1.0, DEFAULT_WINDOW).is_some());
    }

    #[test]
    fn a_server_that_accepts_everything_is_never_throttled() {
        let t = Clock::new(DEFAULT_WINDOW);
        for _ in 0..10_000 {
            assert!(t.admit().is_ok());
            t.record(true);
        }
        // Even one that accepts only half (K = 2) is sent everything.
        let mut held = 0;
        for i in 0..10_000 {
            match t.admit() {
                Ok(()) => t.record(i % 2 == 0),
                Err(_) => held += 1,
            }
        }
        assert_eq!(held, 0);
    }

    #[test]
    fn a_server_at_capacity_is_sent_about_k_times_what_it_accepts() {
        let mut t = Clock::new(DEFAULT_WINDOW);
        // Every 10 ms the client tries 100 requests; the server accepts the
        // first 10 it is sent (ten times overloaded) and refuses the rest.
        let (mut sent, mut accepted, mut tried) = (0u64, 0u64, 0u64);
        for tick in 0..1_000 {
            let mut this_tick = 0;
            for _ in 0..100 {
                if t.admit().is_ok() {
                    this_tick += 1;
                    let ok = this_tick <= 10;
                    t.record(ok);
                    if tick >= 500 {
                        sent += 1;
                        accepted += ok as u64;
                    }
                }
                tried += (tick >= 500) as u64;
            }
            t.advance(Duration::from_millis(10));
        }
        // Once the window is full of the overload: the server sees about K
        // times what it accepts, not ten times, and accepts all it can.
        let ratio = sent as f64 / accepted as f64;
        assert!(
            (1.8..2.3).contains(&ratio),
            "sent {sent}, accepted {accepted}"
        );
        assert_eq!(accepted, 500 * 10);
        assert!(sent < tried / 4, "sent {sent} of {tried}");
    }

    #[test]
    fn a_server_that_refuses_everything_is_still_probed() {
        let t = Clock::new(DEFAULT_WINDOW);
        let mut sent = 0;
        for _ in 0..1_000 {
            if t.admit().is_ok() {
                sent += 1;
                t.record(false);
            }
        }
        assert!(sent > 0 && sent < 100, "{sent}");
    }

    #[test]
    fn the_throttle_lets_go_within_a_few_windows_of_the_overload_ending() {
        let window = Duration::from_secs(2);
        let mut t = Clock::new(window);
        // Ten times overloaded for a window: 100 tries per 10 ms, the
        // first 10 sent accepted.
        let tick = Duration::from_millis(10);
        for _ in 0..200 {
            let mut sent = 0;
            for _ in 0..100 {
                if t.admit().is_ok() {
                    sent += 1;
                    t.record(sent <= 10);
                }
            }
            t.advance(tick);
        }
        // The overload ends: everything sent is accepted. The throttle
        // ramps back up (each accept lowers the share held back) rather
        // than letting the whole demand through at once.
        let mut held_per_window = vec![];
        for _ in 0..3 {
            let mut held = 0;
            for _ in 0..200 {
                for _ in 0..100 {
                    match t.admit() {
                        Ok(()) => t.record(true),
                        Err(_) => held += 1,
                    }
                }
                t.advance(tick);
            }
            held_per_window.push(held);
        }
        assert!(held_per_window[0] > 1_000, "{held_per_window:?}");
        assert_eq!(held_per_window[2], 0, "{held_per_window:?}");
    }

    #[test]
    fn a_held_back_request_says_why() {
        let t = Clock::new(DEFAULT_WINDOW);
        for _ in 0..100 {
            if t.admit().is_ok() {
                t.record(false);
            }
        }
        let h = (0..10).find_map(|_| t.admit().err()).unwrap();
        assert_eq!(h.accepts, 0);
        assert!(h.requests > 100);
        let text = h.to_string();
        assert!(text.contains("not sent"), "{text}");
        assert!(text.contains("accepted 0 of the last"), "{text}");
    }
}
