//! `cargo xtask ci [--repeat N]`: everything CI checks, in order, stopping
//! at the first failure and naming it.
//!
//! The steps: format, lints (clippy `-D warnings`, which includes
//! `incompatible_msrv`: std APIs newer than `rust-version`), docs (rustdoc
//! with warnings denied), the tests (the whole workspace, then the
//! integration suite again with every child started by the `spawn` method),
//! and e2e. `--repeat N` runs the tests step N times in a row and stops at
//! the first failing run: a flaky test shows up there, not in a newcomer's
//! first run.

use std::time::Instant;

use crate::cargo;

type Step = Box<dyn Fn() -> Result<(), String>>;

pub fn run(args: &[String]) -> Result<(), String> {
    let repeat = match args {
        [] => 1,
        [flag, n] if flag == "--repeat" => n
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--repeat takes a count above 0, not {n:?}"))?,
        _ => return Err("usage: cargo xtask ci [--repeat N]".into()),
    };
    let started = Instant::now();
    let steps: Vec<(String, Step)> = vec![
        ("format".into(), Box::new(|| optional("fmt", &["fmt", "--all", "--", "--check"]))),
        (
            "lints".into(),
            Box::new(|| optional("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])),
        ),
        ("docs".into(), Box::new(docs)),
        (if repeat == 1 { "tests".into() } else { format!("tests x{repeat}") }, Box::new(move || tests(repeat))),
        ("e2e".into(), Box::new(|| crate::e2e::run(&[]))),
        ("chaos".into(), Box::new(|| crate::chaos::run(&["--kills".into(), crate::chaos::CI_KILLS.into()]))),
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

/// Rustdoc over the workspace's own crates, every warning an error.
fn docs() -> Result<(), String> {
    cargo_env(&[("RUSTDOCFLAGS", "-D warnings")], &["doc", "--no-deps", "--workspace"])
}

/// The test suite `repeat` times, stopping at the first failing run. Each
/// run is every test of the workspace, then the integration suite with the
/// `spawn` start method as the default (per-method tests still run both).
fn tests(repeat: u32) -> Result<(), String> {
    for run in 1..=repeat {
        if repeat > 1 {
            eprintln!("-- tests, run {run} of {repeat} --");
        }
        let once = || -> Result<(), String> {
            cargo(&["test", "--workspace"])?;
            cargo_env(&[("MULTIPROC_START_METHOD", "spawn")], &["test", "--test", "it"])
        };
        once().map_err(|e| if repeat > 1 { format!("run {run} of {repeat}: {e}") } else { e })?;
    }
    Ok(())
}

/// Runs `cargo ARGS…` with extra environment variables.
fn cargo_env(env: &[(&str, &str)], args: &[&str]) -> Result<(), String> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    eprintln!("$ {} cargo {}", shown.join(" "), args.join(" "));
    let status = crate::cargo_command()
        .envs(env.iter().copied())
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
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
