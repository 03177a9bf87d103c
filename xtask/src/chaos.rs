//! `cargo xtask chaos [SCENARIO…] [--kills N]`: runs `src/bin/chaos.rs`,
//! which SIGKILLs processes at random moments while they use shared state,
//! prints its JSON line per scenario, and fails when any scenario reports a
//! process stuck, a deadlock, a duplicate or a party that failed.

use std::process::{Command, Stdio};

use crate::json;

/// The short run `cargo xtask ci` makes: every scenario, a few dozen kills
/// each (a few hundred in all, well under a minute).
pub const CI_KILLS: &str = "40";

pub fn run(args: &[String]) -> Result<(), String> {
    let built = crate::build(&["build", "--bin", "chaos"])?;
    let chaos = built
        .iter()
        .find(|a| a.kind == "bin" && a.name == "chaos")
        .ok_or("cargo built no `chaos` binary")?
        .executable
        .clone();
    eprintln!("$ chaos {}", args.join(" "));
    let out = Command::new(&chaos)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", chaos.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut failed = Vec::new();
    for line in stdout.lines() {
        println!("{line}");
        if json::field(line, "scenario").is_none() {
            continue;
        }
        let bad: Vec<String> = ["stuck", "deadlocks", "duplicates", "errors"]
            .iter()
            .filter(|k| json::field(line, k).is_some_and(|v| v != "0"))
            .map(|k| (*k).to_owned())
            .collect();
        if !bad.is_empty() {
            failed.push(format!("{}: {}", json::field(line, "scenario").unwrap_or_default(), bad.join(", ")));
        }
    }
    if !out.status.success() {
        return Err(format!("chaos exited with {}", out.status));
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("chaos found problems: {}", failed.join("; "))) }
}
