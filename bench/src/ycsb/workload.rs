//! The core workloads A–F (the proportions and distributions of YCSB's
//! `workloads/workload[a-f]` files) and the per-client operation stream
//! drawn from them, as YCSB's `CoreWorkload` draws it.
//!
//! Key choice follows `CoreWorkload.nextKeynum`: a scrambled zipfian over
//! `records + 2 × operations × insert proportion` items (room for the
//! inserts the run is expected to make, so popular keys do not move as the
//! key space grows), redrawn while it names a key beyond the last
//! acknowledged insert; `latest` (D) is the skewed-latest generator over
//! the acknowledged insert counter; `uniform` is uniform over the loaded
//! records.

use std::fmt;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use super::gen::{
    self, AckCounter, Discrete, ScrambledZipfian, SkewedLatest, SCRAMBLED_ITEM_COUNT,
    SCRAMBLED_ZETAN, ZIPFIAN_CONSTANT,
};

/// How keys of existing records are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Zipfian,
    Latest,
    Uniform,
}

/// One core workload: the operation mix and the request distribution.
#[derive(Clone, Debug, Serialize)]
pub struct Spec {
    pub name: String,
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub read_modify_write: f64,
    pub distribution: Distribution,
    /// Scan lengths are uniform in [1, max_scan_length].
    pub max_scan_length: i64,
}

impl Spec {
    /// YCSB's workload `name` (A–F, any case).
    pub fn core(name: &str) -> anyhow::Result<Spec> {
        let (read, update, insert, scan, rmw, distribution) =
            match name.to_ascii_uppercase().as_str() {
                "A" => (0.5, 0.5, 0.0, 0.0, 0.0, Distribution::Zipfian),
                "B" => (0.95, 0.05, 0.0, 0.0, 0.0, Distribution::Zipfian),
                "C" => (1.0, 0.0, 0.0, 0.0, 0.0, Distribution::Zipfian),
                "D" => (0.95, 0.0, 0.05, 0.0, 0.0, Distribution::Latest),
                "E" => (0.0, 0.0, 0.05, 0.95, 0.0, Distribution::Zipfian),
                "F" => (0.5, 0.0, 0.0, 0.0, 0.5, Distribution::Zipfian),
                other => anyhow::bail!("unknown workload {other:?}: the core workloads are A-F"),
            };
        Ok(Spec {
            name: name.to_ascii_uppercase(),
            read,
            update,
            insert,
            scan,
            read_modify_write: rmw,
            distribution,
            max_scan_length: 100,
        })
    }

    /// A one-line description of the mix.
    pub fn mix(&self) -> String {
        let mut parts = vec![];
        for (p, name) in [
            (self.read, "read"),
            (self.update, "update"),
            (self.insert, "insert"),
            (self.scan, "scan"),
            (self.read_modify_write, "read-modify-write"),
        ] {
            if p > 0.0 {
                parts.push(format!("{:.0}% {name}", p * 100.0));
            }
        }
        parts.join(", ")
    }
}

/// The operation kinds, in report order. `ReadModifyWrite` is also
/// counted as a `Read` and an `Update`, as YCSB measures them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::Read => "READ",
            OpKind::Update => "UPDATE",
            OpKind::Insert => "INSERT",
            OpKind::Scan => "SCAN",
            OpKind::ReadModifyWrite => "READ-MODIFY-WRITE",
        })
    }
}

/// One operation to run. Key numbers become keys with [`gen::key_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read(i64),
    Update(i64),
    /// Acknowledge the key number in [`Workload::inserts`] when done.
    Insert(i64),
    Scan(i64, i64),
    ReadModifyWrite(i64),
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read(_) => OpKind::Read,
            Op::Update(_) => OpKind::Update,
            Op::Insert(_) => OpKind::Insert,
            Op::Scan(..) => OpKind::Scan,
            Op::ReadModifyWrite(_) => OpKind::ReadModifyWrite,
        }
    }

    /// Whether the operation puts a record (and needs a value).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Read(_) | Op::Scan(..))
    }
}

/// A workload shared by every client of a run.
pub struct Workload {
    pub spec: Spec,
    pub records: i64,
    pub fields: usize,
    pub field_len: usize,
    pub seed: u64,
    /// Insert key numbers of the run phase, from `records` on.
    pub inserts: Arc<AckCounter>,
    chooser: Chooser,
    ops: Discrete<OpKind>,
}

#[derive(Clone)]
enum Chooser {
    Zipfian(ScrambledZipfian),
    Latest(SkewedLatest),
    Uniform(i64),
}

impl Workload {
    /// `operations` is the expected operation count of the run phase (0
    /// when it runs for a duration), used as YCSB does to size the
    /// zipfian's key space.
    pub fn new(
        spec: Spec,
        records: i64,
        operations: u64,
        fields: usize,
        field_len: usize,
        seed: u64,
    ) -> Workload {
        assert!(records > 0, "at least one record");
        let inserts = Arc::new(AckCounter::new(records));
        let expected_new = (operations as f64 * spec.insert * 2.0) as i64;
        let chooser = match spec.distribution {
            Distribution::Zipfian => {
                Chooser::Zipfian(ScrambledZipfian::new(0, records + expected_new - 1))
            }
            Distribution::Latest => Chooser::Latest(SkewedLatest::new(inserts.last())),
            Distribution::Uniform => Chooser::Uniform(records),
        };
        let ops = Discrete::new(&[
            (spec.read, OpKind::Read),
            (spec.update, OpKind::Update),
            (spec.insert, OpKind::Insert),
            (spec.scan, OpKind::Scan),
            (spec.read_modify_write, OpKind::ReadModifyWrite),
        ]);
        Workload {
            spec,
            records,
            fields,
            field_len,
            seed,
            inserts,
            chooser,
            ops,
        }
    }

    /// What the generators are, in words, for the report.
    pub fn describe(&self) -> Vec<String> {
        let keys = match &self.chooser {
            Chooser::Zipfian(z) => format!(
                "scrambled zipfian: zipfian θ={ZIPFIAN_CONSTANT} over {} items (ζ={SCRAMBLED_ZETAN}, \
                 YCSB's constant), FNV-64 hashed mod {} key numbers ({} loaded + {} expected inserts), \
                 redrawn above the last acknowledged insert",
                SCRAMBLED_ITEM_COUNT + 1,
                z.item_count(),
                self.records,
                z.item_count() - self.records
            ),
            Chooser::Latest(_) => format!(
                "skewed latest: last acknowledged insert − zipfian(θ={ZIPFIAN_CONSTANT}) over the \
                 acknowledged key numbers (starting at {} records)",
                self.records
            ),
            Chooser::Uniform(n) => format!("uniform over the {n} loaded key numbers"),
        };
        let mut lines = vec![
            format!("workload {}: {}", self.spec.name, self.spec.mix()),
            format!("request distribution: {keys}"),
            format!(
                "records: {}, key = \"user\" + FNV-64(key number), e.g. {}; value = {} fields × {} \
                 random printable bytes concatenated ({} bytes)",
                self.records,
                gen::key_name(0),
                self.fields,
                self.field_len,
                self.fields * self.field_len
            ),
        ];
        if self.spec.scan > 0.0 {
            lines.push(format!(
                "scan length: uniform in [1, {}]",
                self.spec.max_scan_length
            ));
        }
        if self.spec.insert > 0.0 {
            lines.push(format!(
                "inserts: key numbers from {} up, hashed (not in key order)",
                self.records
            ));
        }
        lines
    }

    /// The operation stream of client `client`.
    pub fn client(&self, client: usize) -> ClientGen<'_> {
        ClientGen {
            w: self,
            chooser: self.chooser.clone(),
            rng: SmallRng::seed_from_u64(
                self.seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(client as u64 + 1),
            ),
        }
    }
}

/// One client's generators (each client owns its random state).
pub struct ClientGen<'a> {
    w: &'a Workload,
    chooser: Chooser,
    pub rng: SmallRng,
}

impl ClientGen<'_> {
    fn next_keynum(&mut self) -> i64 {
        let last = self.w.inserts.last();
        match &mut self.chooser {
            Chooser::Zipfian(z) => loop {
                let k = z.next(&mut self.rng);
                if k <= last {
                    return k;
                }
            },
            Chooser::Latest(s) => s.next(last, &mut self.rng),
            Chooser::Uniform(n) => gen::uniform_inclusive(0, *n - 1, &mut self.rng),
        }
    }

    /// The next operation of the run phase.
    pub fn next_op(&mut self) -> Op {
        match self.w.ops.next(&mut self.rng) {
            OpKind::Read => Op::Read(self.next_keynum()),
            OpKind::Update => Op::Update(self.next_keynum()),
            OpKind::Insert => Op::Insert(self.w.inserts.next()),
            OpKind::Scan => {
                let k = self.next_keynum();
                let len = gen::uniform_inclusive(1, self.w.spec.max_scan_length, &mut self.rng);
                Op::Scan(k, len)
            }
            OpKind::ReadModifyWrite => Op::ReadModifyWrite(self.next_keynum()),
        }
    }

    /// A fresh record value.
    pub fn value(&mut self) -> Vec<u8> {
        gen::record_value(self.w.fields, self.w.field_len, &mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix_of(name: &str, n: usize) -> [usize; 5] {
        let w = Workload::new(Spec::core(name).unwrap(), 1000, n as u64, 10, 100, 7);
        let mut c = w.client(0);
        let mut counts = [0usize; 5];
        for _ in 0..n {
            let op = c.next_op();
            counts[op.kind().index()] += 1;
            match op {
                Op::Insert(k) => w.inserts.acknowledge(k),
                Op::Scan(k, len) => {
                    assert!((1..=100).contains(&len));
                    assert!((0..=w.inserts.last()).contains(&k));
                }
                Op::Read(k) | Op::Update(k) | Op::ReadModifyWrite(k) => {
                    assert!((0..=w.inserts.last()).contains(&k), "{k}")
                }
            }
        }
        counts
    }

    #[test]
    fn core_mixes() {
        let n = 20_000;
        let near = |got: usize, p: f64| (got as f64 / n as f64 - p).abs() < 0.02;
        let a = mix_of("a", n);
        assert!(near(a[0], 0.5) && near(a[1], 0.5) && a[2] + a[3] + a[4] == 0);
        let b = mix_of("B", n);
        assert!(near(b[0], 0.95) && near(b[1], 0.05));
        assert_eq!(mix_of("C", n)[0], n);
        let d = mix_of("D", n);
        assert!(near(d[0], 0.95) && near(d[2], 0.05));
        let e = mix_of("E", n);
        assert!(near(e[3], 0.95) && near(e[2], 0.05));
        let f = mix_of("F", n);
        assert!(near(f[0], 0.5) && near(f[4], 0.5));
        assert!(Spec::core("G").is_err());
    }

    #[test]
    fn inserts_extend_the_keyspace_of_later_reads() {
        let w = Workload::new(Spec::core("D").unwrap(), 100, 0, 10, 100, 1);
        let mut c = w.client(0);
        let k = w.inserts.next();
        assert_eq!(k, 100);
        w.inserts.acknowledge(k);
        let mut saw_new = false;
        for _ in 0..1000 {
            if let Op::Read(k) = c.next_op() {
                assert!(k <= 100);
                saw_new |= k == 100;
            }
        }
        assert!(saw_new, "latest makes the newest key the most popular");
    }

    #[test]
    fn clients_draw_different_streams_from_one_seed() {
        let w = Workload::new(Spec::core("A").unwrap(), 1000, 0, 10, 100, 1);
        let a: Vec<Op> = (0..20).map(|_| w.client(0).next_op()).collect();
        let again: Vec<Op> = (0..20).map(|_| w.client(0).next_op()).collect();
        assert_eq!(a, again, "same seed, same stream");
        let mut c1 = w.client(1);
        let mut c0 = w.client(0);
        let s0: Vec<Op> = (0..20).map(|_| c0.next_op()).collect();
        let s1: Vec<Op> = (0..20).map(|_| c1.next_op()).collect();
        assert_ne!(s0, s1);
    }
}
