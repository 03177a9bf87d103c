//! `cargo xtask`: the project's automation, a plain binary with no
//! dependencies, wired by the alias in `.cargo/config.toml`.
//!
//! - `cargo xtask ci [--repeat N]`: fmt check, clippy `-D warnings`, docs,
//!   the tests (also under the `spawn` start method; N times), e2e.
//! - `cargo xtask e2e [NAME…]`: every example and fault scenario, checked for
//!   output, exit status, hangs, leftover processes, leaked fds and new
//!   `/dev/shm` entries.
//! - `cargo xtask bench [--json] [--runs N] [--compare BASE.json] [--svg FILE]
//!   [NAME…]`: the benchmark figures beside CPython's and the OS floor, all
//!   measured in the same run, as medians and ranges of several runs.
//! - `cargo xtask chaos [SCENARIO…] [--kills N]`: processes SIGKILLed at
//!   random moments while they use shared state; one JSON line per scenario.
//!
//! See `xtask/README.md`.

mod bench;
mod chaos;
mod chart;
mod ci;
mod e2e;
mod json;
mod procs;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "usage: cargo xtask ci [--repeat N] | e2e [NAME…] | bench [--json] [--runs N] [--compare BASE.json] [--svg FILE] [NAME…] | chaos [SCENARIO…] [--kills N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(rest),
        Some("e2e") => e2e::run(rest),
        Some("bench") => bench::run(rest),
        Some("chaos") => chaos::run(rest),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
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

fn cargo_command() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cargo ARGS…` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = cargo_command().args(args).status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}

/// One executable cargo built: its target kind (`example`, `bin`, `bench`…),
/// the source file it was built from, and where it is.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub kind: String,
    pub name: String,
    pub src_path: PathBuf,
    pub executable: PathBuf,
}

/// Runs a cargo build command (`build …`, `bench --no-run …`) and returns the
/// executables it produced or found fresh, as cargo reports them: no guessing
/// at target directories or profiles.
pub fn build(args: &[&str]) -> Result<Vec<Artifact>, String> {
    eprintln!("$ cargo {}", args.join(" "));
    let out = cargo_command()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("`cargo {}` failed ({})", args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| json::field(l, "reason").as_deref() == Some("compiler-artifact"))
        .filter_map(|l| {
            Some(Artifact {
                kind: json::field(l, "kind")?,
                name: json::field(l, "name")?,
                src_path: json::field(l, "src_path")?.into(),
                executable: json::field(l, "executable")?.into(),
            })
        })
        .collect())
}
