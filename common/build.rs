//! Records the commit this build comes from as `TESSERA_GIT_SHA` (12 hex
//! digits) for the build info every process logs and exports.
//!
//! `TESSERA_GIT_SHA` in the build's environment wins (a container build
//! has no `.git` and passes it as a build argument); without either the
//! value is `unknown`. Only `HEAD` and the ref it names are watched, so a
//! commit re-runs this script and nothing else in the tree does.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn watch(path: &Path) {
    // Cargo re-runs a script whose watched path is missing on every build,
    // so only files that exist are named.
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TESSERA_GIT_SHA");
    let given = std::env::var("TESSERA_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let sha = match given {
        Some(s) => s.trim().chars().take(40).collect(),
        None => {
            // `--git-path` finds each file in a worktree too.
            let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
            files.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for f in files {
                if let Some(p) = git(&["rev-parse", "--git-path", &f]) {
                    watch(
                        &std::env::current_dir()
                            .unwrap_or_default()
                            .join(PathBuf::from(p)),
                    );
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    let clean: String = sha.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let sha = if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    };
    println!("cargo:rustc-env=TESSERA_GIT_SHA={sha}");
}
