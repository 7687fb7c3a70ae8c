//! Where results go: a table for people or one JSON document for programs.
//!
//! Every command builds its result as plain `Serialize` structs, then hands
//! them to [`Output`]: `table` renders them with comfy-table, `json` prints
//! exactly one JSON document on stdout. Nothing but results goes to stdout;
//! progress (spinners) and notes go to stderr, errors to stderr as one
//! `error: ...` line (see `main.rs`).

use anyhow::Result;
use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// The `--output` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// One JSON document on stdout, for scripts and `jq`.
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Output::Json
    }
}

/// Below this terminal width tables are not wrapped to fit: wrapping into
/// a few columns (or a terminal that reports width 0) is worse than long
/// lines.
const MIN_WRAP_WIDTH: u16 = 60;

/// An empty table in the CLI's one style, wrapped to fit the terminal when
/// stdout is one.
fn styled() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    let arrangement = match t.width() {
        Some(w) if w >= MIN_WRAP_WIDTH => ContentArrangement::Dynamic,
        _ => ContentArrangement::Disabled,
    };
    t.set_content_arrangement(arrangement);
    t
}

/// A table with these column headers.
pub fn table(header: &[&str]) -> Table {
    let mut t = styled();
    t.set_header(header.iter().copied());
    t
}

/// A two-column `field | value` table, for showing one object.
pub fn details(rows: Vec<(&str, String)>) -> Table {
    let mut t = styled();
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    t
}

pub fn print_table(t: &Table) {
    say(t);
}

/// Prints `value` as one (pretty) JSON document.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    say(serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints one line of the command's output. A reader that went away
/// (`tessera scan | head`) ends the command quietly with status 141, as
/// SIGPIPE ends other Unix tools — the CLI itself ignores SIGPIPE, so that
/// a connection a server closes is an error it reports, not a signal that
/// kills it.
pub fn say(text: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// A byte count for people: `0 B`, `512 B`, `1.5 KiB`, `96.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in seconds for people: `42s`, `3m 07s`, `2h 05m`.
pub fn human_seconds(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(96 * 1024 * 1024), "96.0 MiB");
    }

    #[test]
    fn seconds_for_people() {
        assert_eq!(human_seconds(42), "42s");
        assert_eq!(human_seconds(187), "3m 07s");
        assert_eq!(human_seconds(7500), "2h 05m");
    }

    #[test]
    fn tables_render_headers_and_rows() {
        let mut t = table(&["ID", "NAME"]);
        t.add_row(vec!["1", "default"]);
        let s = t.to_string();
        assert!(s.contains("ID") && s.contains("default"), "{s}");
    }
}
