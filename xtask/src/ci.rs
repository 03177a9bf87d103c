//! `cargo xtask ci`: everything CI checks, in order, stopping at the first
//! failure and naming it.

use std::time::Instant;

use crate::cargo;

type Step = fn() -> Result<(), String>;

pub fn run() -> Result<(), String> {
    let started = Instant::now();
    let steps: [(&str, Step); 5] = [
        ("format", || optional("fmt", &["fmt", "--all", "--", "--check"])),
        ("lints", || optional("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])),
        ("tests", || cargo(&["test", "--workspace"])),
        ("e2e", || crate::e2e::run(&[])),
        ("chaos", || crate::chaos::run(&["--kills".into(), crate::chaos::CI_KILLS.into()])),
    ];
    for (i, (name, step)) in steps.iter().enumerate() {
        let t = Instant::now();
        eprintln!("== ci step {}/{}: {name} ==", i + 1, steps.len());
        step().map_err(|e| format!("ci failed at step {}/{} ({name}): {e}", i + 1, steps.len()))?;
        eprintln!("== {name}: ok in {:.0} s ==", t.elapsed().as_secs_f64());
    }
    eprintln!("ci: all {} steps passed in {:.0} s", steps.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a step that needs a toolchain component (rustfmt, clippy), skipping
/// it with a note when the toolchain lacks it. `.ci/run` installs both, so CI
/// never skips.
fn optional(tool: &str, args: &[&str]) -> Result<(), String> {
    let present = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([tool, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        cargo(args)
    } else {
        eprintln!("note: `cargo {tool}` is not installed (rustup component add {}); skipping", component(tool));
        Ok(())
    }
}

fn component(tool: &str) -> &str {
    if tool == "fmt" { "rustfmt" } else { tool }
}
