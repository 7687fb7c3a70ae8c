//! fsync latency: append 4 KiB to a file and `fdatasync` it, many times.
//! This is the cost every durable write pays at least once; tessera's
//! single-client write latency is judged against it.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::report::{Latency, Report, Row};

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write in (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of fsyncs.
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
}

/// Measures fsync latency; returns the histogram in microseconds.
pub fn measure(dir: Option<PathBuf>, count: u64, progress: bool) -> anyhow::Result<Histogram<u64>> {
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let mut file = std::fs::File::create(tmp.path().join("fsync.bin"))?;
    let block = vec![0xa5u8; 4096];
    let mut hist = Histogram::<u64>::new(3)?;
    let bar = if progress {
        ProgressBar::new(count)
    } else {
        ProgressBar::hidden()
    };
    for _ in 0..count {
        let t = Instant::now();
        file.write_all(&block)?;
        // SAFETY: the descriptor is open for the lifetime of `file`.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
            anyhow::bail!("fdatasync failed: {}", std::io::Error::last_os_error());
        }
        hist.record(t.elapsed().as_micros() as u64)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(hist)
}

pub fn run(args: Args) -> anyhow::Result<Report> {
    let started = Instant::now();
    let hist = measure(args.dir, args.count, true)?;
    Ok(Report {
        title: "fsync of 4 KiB appends".into(),
        rows: vec![Row {
            name: "fdatasync".into(),
            ops_per_sec: hist.len() as f64 / started.elapsed().as_secs_f64(),
            latency: Latency::from_histogram(&hist),
            errors: 0,
        }],
        notes: vec![],
    })
}
