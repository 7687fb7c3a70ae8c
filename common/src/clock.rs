//! The process's monotonic clock as leases, Raft ticks and store liveness
//! see it — and, in a test build, the hook that skews it.
//!
//! Every decision that rests on time measured here being comparable with
//! time measured in another process reads [`now`], not `Instant::now()`,
//! and every wait toward such a deadline converts with [`real`]:
//!
//! - a region leader's lease, counted on the leader's clock against its
//!   followers' election timers (`tessera-multiraft`: the poller's clock,
//!   its ticks, and the lease check of reads served off the poller);
//! - the directory leader's store liveness (Up → Disconnected → Down).
//!
//! Latency metrics, request deadlines and back-off read the real clock:
//! their errors cost time, never correctness.
//!
//! In a real build [`now`] is `Instant::now()` and [`real`] the identity;
//! nothing can change them. In a test build (feature `failpoints`) the
//! status server's `/fault/clock` endpoint (`crate::status`) sets this
//! process's clock to run at a rate (0.5: half speed, 2: double speed) or
//! jumps it ahead — a drifting clock, or a machine paused and resumed —
//! which the nemesis's `clock-skew` uses. The skewed clock stays
//! monotonic: rates are positive and jumps go forward only. A monotonic
//! clock never steps back on a real machine either, and tessera reads no
//! wall clock for any safety decision, so a wall-clock step backwards has
//! nothing to act on.
//!
//! What the lease assumes of clocks is stated in
//! `tessera_multiraft::RaftConfig::max_clock_drift`: over one election
//! timeout a leader's clock may fall behind a follower's by at most that
//! (20% at the defaults). A rate of 0.5 on a leader breaks the assumption,
//! and the nemesis suite's negative control shows the checker catching it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// The slowest and fastest rates the hook accepts.
pub const MIN_RATE: f64 = 0.05;
pub const MAX_RATE: f64 = 20.0;
/// The longest single jump the hook accepts.
pub const MAX_JUMP: Duration = Duration::from_secs(3600);

/// A clock that runs at `rate` times real time from an anchor, plus the
/// jumps made so far. Pure: it reads no clock itself.
#[derive(Clone, Copy, Debug)]
pub struct Skew {
    real_anchor: Instant,
    skewed_anchor: Instant,
    rate: f64,
}

impl Skew {
    /// The identity from `real_now` on.
    pub fn new(real_now: Instant) -> Self {
        Skew {
            real_anchor: real_now,
            skewed_anchor: real_now,
            rate: 1.0,
        }
    }

    /// The skewed clock's reading at real instant `real_now`.
    pub fn at(&self, real_now: Instant) -> Instant {
        let elapsed = real_now.saturating_duration_since(self.real_anchor);
        self.skewed_anchor + elapsed.mul_f64(self.rate)
    }

    /// From `real_now` on, runs at `rate` (continuing from where it is).
    pub fn set_rate(&mut self, real_now: Instant, rate: f64) -> Result<(), String> {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(format!(
                "a clock rate must be between {MIN_RATE} and {MAX_RATE}, not {rate}"
            ));
        }
        self.skewed_anchor = self.at(real_now);
        self.real_anchor = real_now;
        self.rate = rate;
        Ok(())
    }

    /// Moves the clock `by` ahead at once.
    pub fn jump(&mut self, real_now: Instant, by: Duration) -> Result<(), String> {
        if by > MAX_JUMP {
            return Err(format!(
                "a clock jump must be at most {} s",
                MAX_JUMP.as_secs()
            ));
        }
        self.skewed_anchor = self.at(real_now) + by;
        self.real_anchor = real_now;
        Ok(())
    }

    /// How much real time `d` of this clock takes from now on.
    pub fn real(&self, d: Duration) -> Duration {
        d.div_f64(self.rate)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How far ahead of real time the clock is at `real_now`.
    pub fn ahead(&self, real_now: Instant) -> Duration {
        self.at(real_now).saturating_duration_since(real_now)
    }

    /// How far behind real time the clock is at `real_now`.
    pub fn behind(&self, real_now: Instant) -> Duration {
        real_now.saturating_duration_since(self.at(real_now))
    }
}

static SKEWED: AtomicBool = AtomicBool::new(false);
static SKEW: RwLock<Option<Skew>> = RwLock::new(None);

/// This process's clock for leases, Raft ticks and liveness.
#[inline]
pub fn now() -> Instant {
    let real_now = Instant::now();
    if cfg!(feature = "failpoints") && SKEWED.load(Ordering::Relaxed) {
        if let Some(s) = *SKEW.read() {
            return s.at(real_now);
        }
    }
    real_now
}

/// How long `d` of [`now`]'s clock takes in real time (what to sleep).
#[inline]
pub fn real(d: Duration) -> Duration {
    if cfg!(feature = "failpoints") && SKEWED.load(Ordering::Relaxed) {
        if let Some(s) = *SKEW.read() {
            return s.real(d);
        }
    }
    d
}

/// A clock fault, as the `/fault/clock` endpoint takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockFault {
    /// Run at this rate from now on (1: real speed; a jump made stays).
    Rate(f64),
    /// Jump ahead by this much.
    Jump(Duration),
}

impl std::str::FromStr for ClockFault {
    type Err = String;

    /// `rate=0.5`, `jump=1500ms` (or `jump=2s`), `normal` (rate 1).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "normal" {
            return Ok(ClockFault::Rate(1.0));
        }
        match s.split_once('=') {
            Some(("rate", v)) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite())
                .map(ClockFault::Rate)
                .ok_or_else(|| format!("{v:?} is not a rate")),
            Some(("jump", v)) => parse_duration(v.trim())
                .map(ClockFault::Jump)
                .ok_or_else(|| format!("{v:?} is not a duration like 1500ms or 2s")),
            _ => Err(format!("expected rate=R, jump=Nms or normal, not {s:?}")),
        }
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().ok().map(Duration::from_millis)
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse().ok().map(Duration::from_secs)
    } else {
        None
    }
}

/// Applies `fault` to this process's clock (a test build's fault endpoint;
/// in a real build the clock is never skewed and this refuses).
pub fn apply(fault: ClockFault) -> Result<(), String> {
    if !cfg!(feature = "failpoints") {
        return Err("the clock can be skewed only in a test build".into());
    }
    let real_now = Instant::now();
    let mut guard = SKEW.write();
    if guard.is_none() && fault == ClockFault::Rate(1.0) {
        // Real speed on a clock never skewed (the nemesis heals every
        // process so): keep reading the real clock, no lock on the way.
        return Ok(());
    }
    let mut skew = guard.unwrap_or_else(|| Skew::new(real_now));
    match fault {
        ClockFault::Rate(r) => skew.set_rate(real_now, r)?,
        ClockFault::Jump(d) => skew.jump(real_now, d)?,
    }
    *guard = Some(skew);
    SKEWED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The clock's state in a line: `rate 0.5, 1200 ms behind real time`.
pub fn describe() -> String {
    let real_now = Instant::now();
    match *SKEW.read() {
        None => "rate 1, not skewed".into(),
        Some(s) => {
            let ahead = s.ahead(real_now);
            let behind = s.behind(real_now);
            let offset = if ahead > behind {
                format!("{} ms ahead of real time", ahead.as_millis())
            } else {
                format!("{} ms behind real time", behind.as_millis())
            };
            format!("rate {}, {offset}", s.rate())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_clock_falls_behind_and_a_jump_moves_it_ahead() {
        let t0 = Instant::now();
        let mut s = Skew::new(t0);
        assert_eq!(
            s.at(t0 + Duration::from_secs(2)),
            t0 + Duration::from_secs(2)
        );
        s.set_rate(t0 + Duration::from_secs(2), 0.5).unwrap();
        // 4 s later in real time, 2 s later on the skewed clock.
        let t = t0 + Duration::from_secs(6);
        assert_eq!(s.at(t), t0 + Duration::from_secs(4));
        assert_eq!(s.behind(t), Duration::from_secs(2));
        assert_eq!(
            s.real(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
        s.jump(t, Duration::from_secs(3)).unwrap();
        assert_eq!(s.at(t), t0 + Duration::from_secs(7));
        assert_eq!(s.ahead(t), Duration::from_secs(1));
        // Back to real speed: the offset stays, the clock never steps back.
        s.set_rate(t, 1.0).unwrap();
        assert_eq!(
            s.at(t + Duration::from_secs(1)),
            t0 + Duration::from_secs(8)
        );
    }

    #[test]
    fn the_skewed_clock_never_steps_back() {
        let t0 = Instant::now();
        let mut s = Skew::new(t0);
        let mut last = s.at(t0);
        for (i, rate) in [2.0, 0.05, 20.0, 0.3, 1.0].into_iter().enumerate() {
            let t = t0 + Duration::from_millis(100 * (i as u64 + 1));
            s.set_rate(t, rate).unwrap();
            let seen = s.at(t + Duration::from_millis(10));
            assert!(seen >= last);
            last = seen;
        }
    }

    #[test]
    fn bad_faults_are_refused_and_change_nothing() {
        let t0 = Instant::now();
        let mut s = Skew::new(t0);
        s.set_rate(t0, 0.5).unwrap();
        for bad in [0.0, -1.0, 0.01, 21.0] {
            assert!(s.set_rate(t0, bad).is_err(), "{bad}");
        }
        assert!(s.jump(t0, Duration::from_secs(3601)).is_err());
        assert_eq!(s.rate(), 0.5);
        assert_eq!(s.at(t0), t0);
        for bad in [
            "", "rate", "rate=x", "rate=NaN", "rate=inf", "jump=5", "jump=-1s", "fast",
        ] {
            assert!(bad.parse::<ClockFault>().is_err(), "{bad:?}");
        }
        assert_eq!("rate=0.5".parse(), Ok(ClockFault::Rate(0.5)));
        assert_eq!(" normal\n".parse(), Ok(ClockFault::Rate(1.0)));
        assert_eq!(
            "jump=1500ms".parse(),
            Ok(ClockFault::Jump(Duration::from_millis(1500)))
        );
        assert_eq!(
            "jump=2s".parse(),
            Ok(ClockFault::Jump(Duration::from_secs(2)))
        );
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_real_build_keeps_the_real_clock() {
        assert!(apply(ClockFault::Rate(0.5)).is_err());
        assert_eq!(real(Duration::from_millis(100)), Duration::from_millis(100));
        let before = Instant::now();
        let seen = now();
        assert!(seen >= before && seen <= Instant::now());
    }
}
