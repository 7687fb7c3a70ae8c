//! Which build the harness's binaries are: a test build (feature
//! `failpoints`, with fault endpoints) or a plain one.
//!
//! Tests run whatever [`crate::bin_dir`] holds (`scripts/test` points it at
//! the test build in `target/release/failpoints/`). Benchmarks must measure
//! what users run, so they call [`ensure_plain_binaries`] before starting a
//! cluster: it refuses a test build unless `TESSERA_ALLOW_TEST_BUILD=1`
//! says that is meant (the bench's own smoke test, run inside
//! `scripts/test`).

use std::path::Path;
use std::process::Command;

/// The server binaries a cluster runs.
pub const SERVER_BINARIES: [&str; 4] = [
    "tessera-directory",
    "tessera-store",
    "tessera-router",
    "tessera",
];

/// The features `bin --version` reports (`none`, or `failpoints`).
pub fn binary_features(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {} --version: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .split("features: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} --version does not name its features: {text:?} (a binary older than this harness?)",
                bin.display()
            )
        })?;
    Ok(features.trim().to_string())
}

/// An error when a server binary in `dir` is a test build.
pub fn ensure_plain_binaries_in(dir: &Path) -> anyhow::Result<()> {
    for name in SERVER_BINARIES {
        let bin = dir.join(name);
        if !bin.exists() {
            anyhow::bail!(
                "{} is missing: build the binaries first (`cargo build --release --bins`)",
                bin.display()
            );
        }
        let features = binary_features(&bin)?;
        if features.split(',').any(|f| f.trim() == "failpoints") {
            anyhow::bail!(
                "{} is a test build (features: {features}) with fault endpoints; benchmarks \
                 run what users run: `cargo build --release --bins` relinks the plain \
                 binaries (scripts/test does it when it ends), or set \
                 TESSERA_ALLOW_TEST_BUILD=1 to measure the test build anyway",
                bin.display()
            );
        }
    }
    Ok(())
}

/// [`ensure_plain_binaries_in`] for [`crate::bin_dir`], unless
/// `TESSERA_ALLOW_TEST_BUILD=1`.
pub fn ensure_plain_binaries() -> anyhow::Result<()> {
    if std::env::var("TESSERA_ALLOW_TEST_BUILD").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    ensure_plain_binaries_in(&crate::bin_dir())
}
