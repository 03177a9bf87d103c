//! `cargo xtask ci`: everything CI checks, in order, stopping at the first
//! failure.

use crate::cargo;

pub fn run() -> Result<(), String> {
    if has_component("fmt") {
        cargo(&["fmt", "--all", "--", "--check"])?;
    } else {
        eprintln!("note: rustfmt is not installed; skipping the format check");
    }
    if has_component("clippy") {
        cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    } else {
        eprintln!("note: clippy is not installed; skipping lints");
    }
    cargo(&["test", "--workspace"])?;
    crate::e2e::run(&[])
}

/// Whether `cargo <tool> --version` works (a toolchain may lack rustfmt or clippy).
fn has_component(tool: &str) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::process::Command::new(cargo)
        .args([tool, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
