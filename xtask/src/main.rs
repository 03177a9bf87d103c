//! `cargo xtask`: the project's automation, a plain binary wired by the
//! alias in `.cargo/config.toml`.
//!
//! - `cargo xtask ci`: fmt check, clippy `-D warnings`, the tests, e2e.
//! - `cargo xtask e2e`: every example and fault scenario, checked for output,
//!   hangs, leftover processes, and new `/dev/shm` entries.
//! - `cargo xtask bench [--json] [NAME…]`: the benchmark figures beside
//!   CPython's, measured in the same run.

mod bench;
mod ci;
mod e2e;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("e2e") => e2e::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask ci | e2e [NAME…] | bench [--json] [NAME…]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// Runs `cargo ARGS…` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo).args(args).current_dir(root()).status().map_err(|e| format!("run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}
