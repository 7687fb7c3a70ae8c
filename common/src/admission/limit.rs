//! The adaptive part of the request quota: how many requests a process
//! takes on at once while its answers stay fast.
//!
//! A fixed `max_serving_requests` bounds latency only for the capacity it
//! was chosen for: a process that serves 4,096 requests at once while it
//! completes 5,000 a second keeps each admitted request waiting most of a
//! second, and a client's deadline passes while its request waits inside;
//! one that serves 256 on a machine that could take more is held back.
//! So below the fixed quota the process can keep a *limit* that follows
//! its latency (the idea
//! of TCP Vegas and of Netflix's concurrency limiters, which CockroachDB's
//! and TiKV's admission also rest on: measure the queue by the time spent
//! in it, and admit less when it grows):
//!
//! - the limit counts requests **being served** (admitted, answer not
//!   ready yet); an answer waiting for a slow reader holds its place in
//!   the fixed quotas (requests, bytes), not in this limit, so readers
//!   that never read cannot take the service's places;
//! - every admitted request's **service time** (admission until the
//!   service has its answer; not the time a slow reader takes to read it,
//!   which a client could stretch at will) is a sample, unless the answer
//!   is an error without a body (a refusal further in — e.g. a request
//!   whose bytes passed the byte quota — or bad input: fast, and no
//!   measure of a queue);
//! - each **window** of at least 100 ms and 16 samples is summed up by
//!   its **median** (of its first 1,024
//!   samples): a queue slows every request, while a few long scans among
//!   many point reads do not move the median — an average would let a
//!   handful of large requests shrink the limit for everyone. A second
//!   with fewer than 16 samples is dropped unjudged: a few stray requests
//!   say nothing about queues, and must not set the baseline;
//! - the **baseline** is the smallest window median of the last ten
//!   seconds (a sliding minimum over one-second slots): the latency of the
//!   process when little waits inside it. A sliding minimum follows a
//!   genuinely slower process (a slower disk) within ten seconds, and
//!   cannot creep upwards while the limit keeps queues short;
//! - a window whose median passes `latency_tolerance` × baseline shrinks
//!   the limit in proportion (to `tolerance × baseline / median` of it,
//!   by at least a tenth and at most half; not below
//!   `min_adaptive_limit`); a window
//!   within it, in which the process held at least half the limit,
//!   raises it by √limit (not above `max_serving_requests`). A limit
//!   nobody reaches does not grow, so one burst finds it where the last
//!   load left it.
//!
//! Requests over the limit are refused like requests over the fixed
//! quota (`RESOURCE_EXHAUSTED`, reason `latency`), before they are read.
//! The limit starts at `max_serving_requests`: nothing is refused until
//! latency has shown a queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest window.
const WINDOW: Duration = Duration::from_millis(100);
/// Samples a window needs before it may close early.
const WINDOW_SAMPLES: u32 = 16;
/// A window with too few samples after this long is dropped.
const LONGEST_WINDOW: Duration = Duration::from_secs(1);
/// Samples a window keeps for its median.
const KEPT_SAMPLES: usize = 1024;
/// Slots of the sliding minimum, one second each.
const BASELINE_SLOTS: usize = 10;

#[derive(Debug)]
struct Window {
    start: Instant,
    /// The first [`KEPT_SAMPLES`] service times.
    kept: Vec<Duration>,
    samples: u32,
    /// The most requests in flight seen at a sample.
    peak: usize,
}

#[derive(Debug)]
struct State {
    window: Window,
    /// Per one-second slot: (slot number, smallest window average).
    slots: [(u64, Duration); BASELINE_SLOTS],
    /// Slot numbers count seconds from here.
    epoch: Instant,
    /// The last window's median and the baseline it was judged against.
    last: (Duration, Duration),
}

/// The adaptive request limit of one process.
#[derive(Debug)]
pub struct AdaptiveLimit {
    limit: AtomicUsize,
    min: usize,
    max: usize,
    tolerance: f64,
    state: Mutex<State>,
}

impl AdaptiveLimit {
    /// A limit between `min` and `max` (`min` is capped at `max`), judged
    /// against `tolerance` × the baseline latency.
    pub fn new(min: usize, max: usize, tolerance: f64, now: Instant) -> Self {
        AdaptiveLimit {
            limit: AtomicUsize::new(max),
            min: min.min(max).max(1),
            max,
            tolerance,
            state: Mutex::new(State {
                window: Window {
                    start: now,
                    kept: Vec::with_capacity(KEPT_SAMPLES),
                    samples: 0,
                    peak: 0,
                },
                slots: [(u64::MAX, Duration::MAX); BASELINE_SLOTS],
                epoch: now,
                last: (Duration::ZERO, Duration::ZERO),
            }),
        }
    }

    /// Requests the process takes on at once now.
    pub fn get(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The last window's median latency and the baseline it was judged
    /// against (for refusal messages).
    pub fn latency(&self) -> (Duration, Duration) {
        self.state.lock().map(|s| s.last).unwrap_or_default()
    }

    /// One admitted request's service time, with `in_flight` requests
    /// being served when it ended. Returns the new limit when a window
    /// closed.
    pub fn sample(&self, now: Instant, latency: Duration, in_flight: usize) -> Option<usize> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let w = &mut s.window;
        if w.kept.len() < KEPT_SAMPLES {
            w.kept.push(latency);
        }
        w.samples += 1;
        w.peak = w.peak.max(in_flight);
        let age = now.saturating_duration_since(w.start);
        if age < WINDOW || w.samples < WINDOW_SAMPLES {
            if age >= LONGEST_WINDOW {
                // Too few requests to say anything (and none near any
                // limit): start over, judging nothing.
                w.kept.clear();
                w.start = now;
                w.samples = 0;
                w.peak = 0;
            }
            return None;
        }
        let mid = w.kept.len() / 2;
        let avg = *w.kept.select_nth_unstable(mid).1;
        let peak = w.peak;
        w.kept.clear();
        w.start = now;
        w.samples = 0;
        w.peak = 0;
        let slot = now.saturating_duration_since(s.epoch).as_secs();
        let i = (slot % BASELINE_SLOTS as u64) as usize;
        if s.slots[i].0 != slot {
            s.slots[i] = (slot, avg);
        } else {
            s.slots[i].1 = s.slots[i].1.min(avg);
        }
        let recent = slot.saturating_sub(BASELINE_SLOTS as u64 - 1);
        let baseline = s
            .slots
            .iter()
            .filter(|(n, _)| *n != u64::MAX && *n >= recent)
            .map(|(_, d)| *d)
            .min()
            .unwrap_or(avg);
        s.last = (avg, baseline);
        let limit = self.get();
        let allowed = self.tolerance * baseline.as_secs_f64();
        let next = if avg.as_secs_f64() > allowed {
            // In proportion to the excess, at least a tenth and at most
            // half a window: a deep queue drains in a few windows.
            let gradient = (allowed / avg.as_secs_f64()).clamp(0.5, 0.9);
            ((limit as f64 * gradient) as usize).max(self.min)
        } else if peak * 2 >= limit {
            (limit + (limit as f64).sqrt().ceil() as usize).min(self.max)
        } else {
            limit
        };
        self.limit.store(next, Ordering::Relaxed);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `windows` windows of 20 samples of `latency` each, 100 ms
    /// apart, with `in_flight` held; returns the limit after.
    fn feed(
        l: &AdaptiveLimit,
        t: &mut Instant,
        windows: usize,
        latency: Duration,
        in_flight: usize,
    ) -> usize {
        for _ in 0..windows {
            for _ in 0..19 {
                l.sample(*t, latency, in_flight);
            }
            *t += WINDOW;
            l.sample(*t, latency, in_flight);
        }
        l.get()
    }

    #[test]
    fn a_queue_shrinks_the_limit_to_its_floor_and_it_grows_back_when_used() {
        let mut t = Instant::now();
        let l = AdaptiveLimit::new(64, 4096, 4.0, t);
        assert_eq!(
            l.get(),
            4096,
            "nothing is refused before latency shows a queue"
        );
        // Unloaded: 2 ms, and nobody near the limit: it stays.
        assert_eq!(feed(&l, &mut t, 20, 2 * MS, 10), 4096);
        // A queue: 50 ms, 25× the baseline; the limit halves a window down
        // to the floor.
        assert_eq!(feed(&l, &mut t, 1, 50 * MS, 4096), 2048);
        let mut last = l.get();
        for _ in 0..10 {
            let now = feed(&l, &mut t, 1, 50 * MS, 4096);
            assert!(now <= last);
            last = now;
        }
        assert_eq!(last, 64);
        assert_eq!(l.latency(), (50 * MS, 2 * MS));
        // Fast again and the limit in use: it grows by √limit a window.
        let after = feed(&l, &mut t, 1, 3 * MS, 64);
        assert_eq!(after, 64 + 8);
        assert_eq!(feed(&l, &mut t, 200, 3 * MS, 4096), 4096);
    }

    #[test]
    fn the_baseline_follows_a_slower_process_within_ten_seconds() {
        let mut t = Instant::now();
        let l = AdaptiveLimit::new(16, 1000, 3.0, t);
        feed(&l, &mut t, 10, MS, 1000);
        // Every request now takes 20 ms (a slower disk): at first that is
        // a queue, and the limit falls ...
        feed(&l, &mut t, 20, 20 * MS, 1000);
        assert_eq!(l.get(), 16);
        // A mild excess (3.2 ms against 3 × 1 ms) shrinks it by a tenth.
        let mild = AdaptiveLimit::new(16, 1000, 3.0, t);
        feed(&mild, &mut t, 10, MS, 1000);
        assert_eq!(
            feed(&mild, &mut t, 1, Duration::from_micros(3200), 1000),
            900
        );
        // Twice the allowed latency halves it.
        assert_eq!(feed(&mild, &mut t, 1, 6 * MS, 1000), 450);
        // ... but once the fast windows are ten seconds old, 20 ms is the
        // baseline and the limit grows again.
        let low = l.get();
        feed(&l, &mut t, 120, 20 * MS, 1000);
        assert_eq!(l.latency().1, 20 * MS);
        assert!(l.get() > low, "{} > {low}", l.get());
    }

    #[test]
    fn a_few_long_requests_among_many_short_ones_do_not_shrink_it() {
        let mut t = Instant::now();
        let l = AdaptiveLimit::new(16, 1000, 3.0, t);
        feed(&l, &mut t, 10, MS, 1000);
        // Each window: 13 point reads of 1 ms and 7 scans of 80 ms (the
        // average would be 28.7 ms, nine times the allowed 3 ms).
        for _ in 0..20 {
            for i in 0..20 {
                let latency = if i % 3 == 0 { 80 * MS } else { MS };
                if i == 19 {
                    t += WINDOW;
                }
                l.sample(t, latency, 1000);
            }
        }
        assert_eq!(l.get(), 1000);
    }

    #[test]
    fn sparse_windows_are_not_judged_and_the_floor_stays_under_the_cap() {
        let mut t = Instant::now();
        let l = AdaptiveLimit::new(500, 100, 2.0, t);
        t += WINDOW;
        assert_eq!(l.sample(t, MS, 1), None, "one sample is not a window");
        t += LONGEST_WINDOW;
        assert_eq!(l.sample(t, 100 * MS, 1), None, "a sparse second is dropped");
        assert_eq!(l.get(), 100);
        assert_eq!(
            l.latency(),
            (Duration::ZERO, Duration::ZERO),
            "no baseline from it"
        );
        // A floor above the cap is the cap.
        for _ in 0..50 {
            feed(&l, &mut t, 1, 100 * MS, 100);
        }
        assert_eq!(l.get(), 100);
    }
}
