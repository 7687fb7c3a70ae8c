//! The random generators of YCSB's core workload, ported from the maths of
//! the reference (Java) YCSB: key names, the zipfian family, the
//! acknowledged insert counter, the operation chooser and record values.
//!
//! - [`fnv_hash64`]: FNV-1a over the 8 little-endian bytes of a key number,
//!   then the absolute value (Java's `Math.abs`, so `i64::MIN` stays
//!   negative); key names are `"user" + hash` ([`key_name`]), which spreads
//!   inserts over the key space (`insertorder=hashed`).
//! - [`Zipfian`]: Gray et al.'s "Quickly generating billion-record synthetic
//!   databases" over `[min, max]` with constant θ; when asked for a larger
//!   item count it extends ζ(n) incrementally, and — like YCSB — recomputes
//!   η with its *original* item count.
//! - [`ScrambledZipfian`]: a zipfian over 10¹⁰+1 items whose ζ is YCSB's
//!   precomputed constant for θ = 0.99 (26.469…), hashed with FNV and taken
//!   modulo the item count, so popular keys are scattered over the range.
//! - [`SkewedLatest`] (workload D): `last acknowledged − zipfian(last)`, the
//!   most recently inserted keys being the most popular.
//! - [`AckCounter`]: hands out insert key numbers and publishes the highest
//!   key number below which every insert has finished.
//! - [`Discrete`]: picks an operation by weight; [`uniform_inclusive`]:
//!   YCSB's `UniformLongGenerator`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use rand::Rng;

pub const FNV_OFFSET_BASIS_64: i64 = 0xCBF2_9CE4_8422_2325_u64 as i64;
pub const FNV_PRIME_64: i64 = 1_099_511_628_211;

/// YCSB's `Utils.fnvhash64`.
pub fn fnv_hash64(mut val: i64) -> i64 {
    let mut hash = FNV_OFFSET_BASIS_64;
    for _ in 0..8 {
        let octet = val & 0xff;
        val >>= 8;
        hash ^= octet;
        hash = hash.wrapping_mul(FNV_PRIME_64);
    }
    hash.wrapping_abs()
}

/// The key of record `keynum` (YCSB's `buildKeyName` with hashed inserts
/// and the default zero padding of 1, i.e. none).
pub fn key_name(keynum: i64) -> String {
    format!("user{}", fnv_hash64(keynum))
}

/// The zipfian constant every core workload uses.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;
/// The item count of the zipfian under [`ScrambledZipfian`].
pub const SCRAMBLED_ITEM_COUNT: i64 = 10_000_000_000;
/// ζ(10¹⁰ + 1, 0.99) as YCSB hard-codes it.
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// Σ_{i=st}^{n-1} 1/(i+1)^θ added to `initial`.
pub fn zeta(st: i64, n: i64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in st..n {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// A zipfian distribution over `[base, base + items)`: item `base` is the
/// most popular.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: i64,
    base: i64,
    theta: f64,
    zeta2theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    count_for_zeta: i64,
}

impl Zipfian {
    /// Over `[min, max]`, computing ζ(items) (O(items)).
    pub fn new(min: i64, max: i64, theta: f64) -> Zipfian {
        let items = max - min + 1;
        Self::with_zetan(min, max, theta, zeta(0, items, theta, 0.0))
    }

    /// Over `[min, max]` with a precomputed ζ(items).
    pub fn with_zetan(min: i64, max: i64, theta: f64, zetan: f64) -> Zipfian {
        let items = max - min + 1;
        let zeta2theta = zeta(0, 2, theta, 0.0);
        Zipfian {
            items,
            base: min,
            theta,
            zeta2theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2theta / zetan),
            count_for_zeta: items,
        }
    }

    #[cfg(test)]
    pub fn zetan(&self) -> f64 {
        self.zetan
    }

    /// The next value over the constructed item count.
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R) -> i64 {
        let items = self.items;
        self.next_over(items, rng)
    }

    /// The next value over `item_count` items (YCSB's `nextLong`): a
    /// larger count extends ζ incrementally; a smaller one is ignored, as
    /// in YCSB without `allowitemcountdecrease`.
    pub fn next_over<R: Rng + ?Sized>(&mut self, item_count: i64, rng: &mut R) -> i64 {
        if item_count > self.count_for_zeta {
            self.zetan = zeta(self.count_for_zeta, item_count, self.theta, self.zetan);
            self.count_for_zeta = item_count;
            // YCSB recomputes η with the original item count.
            self.eta = (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta))
                / (1.0 - self.zeta2theta / self.zetan);
        }
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return self.base;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return self.base + 1;
        }
        self.base + (item_count as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as i64
    }
}

/// YCSB's `ScrambledZipfianGenerator` over `[min, max]` with θ = 0.99.
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    min: i64,
    item_count: i64,
    zipf: Zipfian,
}

impl ScrambledZipfian {
    pub fn new(min: i64, max: i64) -> ScrambledZipfian {
        ScrambledZipfian {
            min,
            item_count: max - min + 1,
            zipf: Zipfian::with_zetan(0, SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    pub fn item_count(&self) -> i64 {
        self.item_count
    }

    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R) -> i64 {
        let v = self.zipf.next(rng);
        self.min + fnv_hash64(v) % self.item_count
    }
}

/// YCSB's `SkewedLatestGenerator`: popularity falls with distance from the
/// latest acknowledged insert.
#[derive(Clone, Debug)]
pub struct SkewedLatest {
    zipf: Zipfian,
}

impl SkewedLatest {
    /// `last` is the counter's last value when the workload starts.
    pub fn new(last: i64) -> SkewedLatest {
        SkewedLatest {
            zipf: Zipfian::new(0, last.max(1) - 1, ZIPFIAN_CONSTANT),
        }
    }

    pub fn next<R: Rng + ?Sized>(&mut self, last: i64, rng: &mut R) -> i64 {
        last - self.zipf.next_over(last, rng)
    }
}

/// YCSB's `AcknowledgedCounterGenerator`: `next` hands out key numbers
/// from `start` on; `last` is the highest number such that it and every
/// number below it were acknowledged (`start − 1` at first).
#[derive(Debug)]
pub struct AckCounter {
    next: AtomicI64,
    last: AtomicI64,
    pending: Mutex<BTreeSet<i64>>,
}

impl AckCounter {
    pub fn new(start: i64) -> AckCounter {
        AckCounter {
            next: AtomicI64::new(start),
            last: AtomicI64::new(start - 1),
            pending: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn next(&self) -> i64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    pub fn last(&self) -> i64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Marks `v` done (successful or not, as YCSB does).
    pub fn acknowledge(&self, v: i64) {
        let mut pending = self.pending.lock().expect("ack counter");
        pending.insert(v);
        let mut last = self.last.load(Ordering::SeqCst);
        while pending.remove(&(last + 1)) {
            last += 1;
        }
        self.last.store(last, Ordering::SeqCst);
    }
}

/// YCSB's `UniformLongGenerator`: uniform over `[lo, hi]`.
pub fn uniform_inclusive<R: Rng + ?Sized>(lo: i64, hi: i64, rng: &mut R) -> i64 {
    let u: f64 = rng.random();
    lo + (u * (hi - lo + 1) as f64) as i64
}

/// YCSB's `DiscreteGenerator`: one of the values, with probability
/// proportional to its weight.
#[derive(Clone, Debug)]
pub struct Discrete<T: Copy> {
    values: Vec<(f64, T)>,
    sum: f64,
}

impl<T: Copy> Discrete<T> {
    pub fn new(weighted: &[(f64, T)]) -> Discrete<T> {
        let values: Vec<(f64, T)> = weighted.iter().copied().filter(|(w, _)| *w > 0.0).collect();
        let sum = values.iter().map(|(w, _)| w).sum();
        Discrete { values, sum }
    }

    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> T {
        let mut val = rng.random::<f64>() * self.sum;
        for (w, v) in &self.values {
            if val < *w {
                return *v;
            }
            val -= w;
        }
        self.values.last().expect("at least one weight").1
    }
}

/// A record value: `fields` fields of `field_len` random printable bytes,
/// concatenated (field i at offset i × field_len), as YCSB's
/// `RandomByteIterator` fills them.
pub fn record_value<R: Rng + ?Sized>(fields: usize, field_len: usize, rng: &mut R) -> Vec<u8> {
    let mut v = vec![0u8; fields * field_len];
    let mut chunks = v.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let bits: u64 = rng.random();
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = b' ' + ((bits >> (i * 8)) as u8 % 95);
        }
    }
    for b in chunks.into_remainder() {
        *b = b' ' + rng.random_range(0..95u8);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    #[test]
    fn fnv_matches_ycsb_key_names() {
        // The first key of every YCSB load, as YCSB prints it.
        assert_eq!(key_name(0), "user6284781860667377211");
        // FNV-1a of the 8 little-endian bytes (computed independently).
        assert_eq!(fnv_hash64(1), 8517097267634966620);
        assert_eq!(fnv_hash64(12345), 1792800413050876852);
        assert_eq!(fnv_hash64(1 << 62), 6284711491923171707);
        assert!((0..10_000).all(|i| fnv_hash64(i) >= 0));
    }

    #[test]
    fn scrambled_zeta_constant_is_zeta_of_its_item_count() {
        // The constant is ζ(10^10 + 1); check the first million terms'
        // part plus an integral tail approximation lands on it.
        let head = zeta(0, 1_000_000, ZIPFIAN_CONSTANT, 0.0);
        let (a, b) = (1_000_000.5f64, 10_000_000_001.5f64);
        let tail = (b.powf(0.01) - a.powf(0.01)) / 0.01;
        assert!(((head + tail) - SCRAMBLED_ZETAN).abs() < 1e-3);
    }

    #[test]
    fn zipfian_head_frequency() {
        let n = 1000;
        let mut z = Zipfian::new(0, n - 1, ZIPFIAN_CONSTANT);
        let mut rng = SmallRng::seed_from_u64(1);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            let v = z.next(&mut rng);
            assert!((0..n).contains(&v));
            counts[v as usize] += 1;
        }
        let zetan = z.zetan();
        // P(item 0) = 1/ζ(n), P(item 1) = 2^-θ/ζ(n).
        let p0 = counts[0] as f64 / draws as f64;
        let p1 = counts[1] as f64 / draws as f64;
        assert!(
            (p0 - 1.0 / zetan).abs() < 0.01,
            "p0 {p0} vs {}",
            1.0 / zetan
        );
        assert!((p1 - 0.5f64.powf(0.99) / zetan).abs() < 0.01, "p1 {p1}");
        // Decreasing popularity: the first 10 items take more than the
        // next 90.
        let first: u64 = counts[..10].iter().sum();
        let next: u64 = counts[10..100].iter().sum();
        assert!(first > next, "{first} vs {next}");
    }

    #[test]
    fn scrambled_zipfian_hot_key_and_range() {
        let items = 100_000;
        let mut z = ScrambledZipfian::new(0, items - 1);
        let mut rng = SmallRng::seed_from_u64(2);
        let draws = 300_000;
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for _ in 0..draws {
            let v = z.next(&mut rng);
            assert!((0..items).contains(&v));
            *counts.entry(v).or_default() += 1;
        }
        // The hottest key is the hash of zipfian item 0, with about
        // 1/ζ = 3.8% of the draws.
        let hot = fnv_hash64(0) % items;
        let p = counts[&hot] as f64 / draws as f64;
        assert!(
            (p - 1.0 / SCRAMBLED_ZETAN).abs() < 0.005,
            "hot key share {p}"
        );
        let max = counts.values().max().copied().unwrap();
        assert_eq!(max, counts[&hot]);
        // Scrambled: the hot keys are not at the start of the range.
        let low: u64 = (0..100).filter_map(|k| counts.get(&k)).sum();
        assert!((low as f64 / draws as f64) < 0.02);
    }

    #[test]
    fn skewed_latest_prefers_recent_keys_and_follows_growth() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut s = SkewedLatest::new(999);
        let mut recent = 0;
        for _ in 0..10_000 {
            let v = s.next(999, &mut rng);
            assert!((0..=999).contains(&v));
            if v >= 990 {
                recent += 1;
            }
        }
        assert!(recent > 3_000, "{recent} of 10,000 in the latest 10 keys");
        // The key space grows with acknowledged inserts.
        let mut newest = 0;
        for _ in 0..10_000 {
            let v = s.next(1999, &mut rng);
            assert!((0..=1999).contains(&v));
            if v == 1999 {
                newest += 1;
            }
        }
        assert!(newest > 1_000);
    }

    #[test]
    fn uniform_scan_lengths_cover_the_range() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut seen = [0u32; 101];
        for _ in 0..100_000 {
            let len = uniform_inclusive(1, 100, &mut rng);
            assert!((1..=100).contains(&len));
            seen[len as usize] += 1;
        }
        // Every length appears, each about 1% of the time.
        for (len, &c) in seen.iter().enumerate().skip(1) {
            assert!((700..1300).contains(&c), "length {len}: {c}");
        }
    }

    #[test]
    fn ack_counter_publishes_contiguous_prefix() {
        let c = AckCounter::new(10);
        assert_eq!(c.last(), 9);
        let (a, b, d) = (c.next(), c.next(), c.next());
        assert_eq!((a, b, d), (10, 11, 12));
        c.acknowledge(11);
        assert_eq!(c.last(), 9, "10 is still in flight");
        c.acknowledge(10);
        assert_eq!(c.last(), 11);
        c.acknowledge(12);
        assert_eq!(c.last(), 12);
    }

    #[test]
    fn discrete_follows_weights() {
        let d = Discrete::new(&[(0.5, 'r'), (0.0, 'x'), (0.5, 'u')]);
        let mut rng = SmallRng::seed_from_u64(5);
        let reads = (0..100_000).filter(|_| d.next(&mut rng) == 'r').count();
        assert!((48_000..52_000).contains(&reads), "{reads}");
    }

    #[test]
    fn record_values_are_printable_and_sized() {
        let mut rng = SmallRng::seed_from_u64(6);
        let v = record_value(10, 100, &mut rng);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|b| (b' '..=b'~').contains(b)));
    }
}
