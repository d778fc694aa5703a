//! Build facts for `freeway --version`: the git commit (`FREEWAY_COMMIT`) and the target triple
//! (`FREEWAY_TARGET`) the binary was built for.
//!
//! The commit is `git rev-parse --short HEAD` when the source is a git checkout, else the
//! `FREEWAY_BUILD_COMMIT` environment variable (for builds from a source archive), else
//! "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FREEWAY_BUILD_COMMIT");

    let commit = git(&["rev-parse", "--short", "HEAD"])
        .or_else(|| std::env::var("FREEWAY_BUILD_COMMIT").ok())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=FREEWAY_COMMIT={commit}");
    println!("cargo:rustc-env=FREEWAY_TARGET={target}");

    // Run again when HEAD moves: HEAD itself, the branch it points to, and packed refs. Only
    // files that exist are named (a missing one would make cargo rerun this every build).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        let mut watch = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(dir.join(branch));
        }
        for path in watch.iter().filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
