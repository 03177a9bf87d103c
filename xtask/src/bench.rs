//! `cargo xtask bench [--json] [NAME…]`: every benchmark figure of the project
//! (`benches/figures/`) beside CPython's (`xtask/py/baseline.py`), measured in
//! the same run, one figure after the other (multiproc, then CPython, so both
//! see the same machine), with the ratio oriented so that above 1 means
//! multiproc is better. The OS floor (`xtask/floor.c`) is printed for
//! reference.
//!
//! A figure one side does not know (not implemented yet) is reported as
//! missing; a figure that fails is reported as failed; neither stops the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{json, procs, root};

/// A figure taking longer is stuck.
const TIMEOUT: Duration = Duration::from_secs(600);
const DRAIN: Duration = Duration::from_secs(2);
const BASELINE: &str = "xtask/py/baseline.py";

/// Figures that the OS floor bounds, and DESIGN.md's target for the ratio.
const FLOORS: &[(&str, &str, &str)] = &[
    ("process_start_join_forkserver_us", "fork_exit_wait_us", "≤ 3x"),
    ("pool_apply_roundtrip_us", "unix_socket_roundtrip_us", "≤ 2x"),
    ("event_wake_us", "futex_roundtrip_us", "≤ 3x"),
    ("lock_uncontended_ns", "cas_lock_ns", "≤ 100 ns"),
];

/// One figure's row.
#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    name: String,
    unit: String,
    better: String,
    multiproc: Option<f64>,
    cpython: Option<f64>,
}

impl Row {
    /// How many times better multiproc is (above 1: multiproc wins).
    fn ratio(&self) -> Option<f64> {
        let (m, c) = (self.multiproc?, self.cpython?);
        if m <= 0.0 || c <= 0.0 {
            return None;
        }
        Some(if self.better == "lower" { c / m } else { m / c })
    }

    /// The line DESIGN.md fixes for `--json`.
    fn json(&self) -> String {
        let num =
            |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{:?}", (v * 1000.0).round() / 1000.0));
        format!(
            "{{\"name\": {}, \"unit\": {}, \"better\": {}, \"multiproc\": {}, \"cpython\": {}}}",
            json::quote(&self.name),
            json::quote(&self.unit),
            json::quote(&self.better),
            num(self.multiproc),
            num(self.cpython)
        )
    }

    fn table_line(&self) -> String {
        let show = |v: Option<f64>| v.map_or_else(|| "missing".to_owned(), human);
        let ratio = self.ratio().map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x"));
        let unit =
            if self.unit.is_empty() { String::new() } else { format!("{} ({} is better)", self.unit, self.better) };
        format!("{:<34} | {:>12} | {:>12} | {ratio:>9} | {unit}", self.name, show(self.multiproc), show(self.cpython))
    }
}

fn header() -> String {
    format!("{:<34} | {:>12} | {:>12} | {:>9} | unit\n{}", "figure", "multiproc", "CPython", "ratio", "-".repeat(100))
}

/// A value with digits where they matter: 4,612,345 · 412.3 · 12.34 · 0.123.
fn human(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(d);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let json = args.iter().any(|a| a == "--json");
    if let Some(flag) = args.iter().find(|a| a.starts_with('-') && *a != "--json") {
        return Err(format!("unknown option {flag}; usage: cargo xtask bench [--json] [NAME…]"));
    }
    let asked: Vec<String> = args.iter().filter(|a| !a.starts_with('-')).cloned().collect();
    // Notes go to stderr under --json, so stdout stays one object per line.
    let note = |s: &str| if json { eprintln!("{s}") } else { println!("{s}") };

    let built = crate::build(&["bench", "--bench", "figures", "--no-run"])?;
    let figures = built
        .iter()
        .find(|a| a.kind == "bench" && a.name == "figures")
        .ok_or("cargo built no `figures` bench")?
        .executable
        .clone();
    let rust_names = lines(&capture(Command::new(&figures).arg("--list"))?);
    let script = root().join(BASELINE);
    let py_names = match python(&script) {
        Ok(names) => Some(names),
        Err(e) => {
            note(&format!("note: CPython column empty: {e}"));
            None
        }
    };
    let names = if asked.is_empty() {
        let mut all = rust_names.clone();
        all.extend(py_names.iter().flatten().filter(|n| !rust_names.contains(n)).cloned());
        all
    } else {
        asked
    };

    let floor = match floor() {
        Ok(lines) => {
            note(&format!("OS floor (xtask/floor.c, this run): {}", lines.join(" · ")));
            lines
        }
        Err(e) => {
            note(&format!("note: OS floor not measured: {e}"));
            Vec::new()
        }
    };
    if !json {
        println!("{}", header());
    }
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for name in &names {
        let mut row = Row { name: name.clone(), ..Row::default() };
        let knows_py = py_names.as_ref().is_some_and(|n| n.contains(name));
        if rust_names.contains(name) {
            match measure(&figures, &["--json", name], &mut problems) {
                Ok(line) => {
                    row.unit = json::field(&line, "unit").unwrap_or_default();
                    row.better = json::field(&line, "better").unwrap_or_default();
                    row.multiproc = json::field(&line, "multiproc").and_then(|v| v.parse().ok());
                }
                Err(e) => problems.push(format!("{name}: multiproc figure failed: {e}")),
            }
        } else if knows_py || py_names.is_none() {
            problems.push(format!("{name}: no multiproc figure yet (benches/figures)"));
        } else {
            problems.push(format!("{name}: unknown figure (neither benches/figures nor {BASELINE} has it)"));
        }
        if knows_py {
            match measure(
                Path::new("python3"),
                &[script.to_str().ok_or("non-UTF-8 path")?, "--json", name],
                &mut problems,
            ) {
                Ok(line) => {
                    row.cpython = json::field(&line, "cpython").and_then(|v| v.parse().ok());
                    if row.unit.is_empty() {
                        row.unit = json::field(&line, "unit").unwrap_or_default();
                        row.better = json::field(&line, "better").unwrap_or_default();
                    }
                }
                Err(e) => problems.push(format!("{name}: CPython figure failed: {e}")),
            }
        } else if py_names.is_some() && rust_names.contains(name) {
            problems.push(format!("{name}: no CPython twin in {BASELINE}"));
        }
        println!("{}", if json { row.json() } else { row.table_line() });
        rows.push(row);
    }
    if !json {
        println!("(ratio: how many times better multiproc is; above 1 means multiproc wins)");
    }
    for (figure, bound, target) in FLOORS {
        let value = rows.iter().find(|r| r.name == *figure).and_then(|r| r.multiproc);
        let base =
            floor.iter().find_map(|l| l.strip_prefix(&format!("{bound} "))?.split_whitespace().next()?.parse().ok());
        if let (Some(v), Some(b)) = (value, base) {
            let b: f64 = b;
            note(&format!(
                "{figure} {} = {:.1}x the OS floor {bound} {} (DESIGN.md: {target})",
                human(v),
                v / b,
                human(b)
            ));
        }
    }
    for p in &problems {
        note(&format!("note: {p}"));
    }
    Ok(())
}

/// The names `baseline.py --list` gives, if python3 runs it.
fn python(script: &Path) -> Result<Vec<String>, String> {
    let version =
        capture(Command::new("python3").arg("--version")).map_err(|_| "python3 is not installed".to_owned())?;
    let names = lines(&capture(Command::new("python3").arg(script).arg("--list"))?);
    if names.is_empty() {
        return Err(format!("{} lists no figures ({})", script.display(), version.trim()));
    }
    Ok(names)
}

/// Runs one figure (its own process tree, with a timeout) and returns its
/// JSON line.
/// Processes a figure leaves behind are killed and noted in `problems`: the
/// value still counts, but the leak is a bug.
fn measure(program: &Path, args: &[&str], problems: &mut Vec<String>) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root());
    let o = procs::run(cmd, TIMEOUT, DRAIN)?;
    let stray: Vec<String> = o.leftovers.iter().chain(&o.pipe_holders).map(ToString::to_string).collect();
    if !stray.is_empty() {
        problems.push(format!(
            "`{} {}` left processes behind (killed): {}",
            program.display(),
            args.join(" "),
            stray.join(", ")
        ));
    }
    let line = o.stdout.lines().find(|l| l.trim_start().starts_with('{')).map(str::to_owned);
    match (o.status, line) {
        (Some(s), Some(line)) if s.success() => Ok(line),
        (None, _) => Err(format!("killed after {} s", TIMEOUT.as_secs())),
        (Some(s), _) => Err(format!("{s}; stderr: {}", last_lines(&o.stderr, 5))),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.current_dir(root()).output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 5)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Compiles `xtask/floor.c` into the target directory and runs it: its lines
/// (`name value unit`).
fn floor() -> Result<Vec<String>, String> {
    let exe = target_dir().join("xtask-os-floor");
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(root().join("xtask/floor.c"))
        .status()
        .map_err(|e| format!("no C compiler (cc): {e}"))?;
    if !built.success() {
        return Err(format!("cc failed ({built})"));
    }
    Ok(lines(&capture(&mut Command::new(&exe))?))
}

/// Where cargo puts build output (xtask runs from it, so it is the parent of
/// this executable's profile directory), else `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
            .unwrap_or_else(|| root().join("target"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_how_many_times_better_multiproc_is() {
        let lower = Row { better: "lower".into(), multiproc: Some(20.0), cpython: Some(400.0), ..Row::default() };
        assert_eq!(lower.ratio(), Some(20.0));
        let higher = Row { better: "higher".into(), multiproc: Some(2e6), cpython: Some(1e5), ..Row::default() };
        assert_eq!(higher.ratio(), Some(20.0));
        assert_eq!(Row { cpython: None, ..higher }.ratio(), None);
    }

    #[test]
    fn json_lines_are_the_shape_design_fixes() {
        let row = Row {
            name: "pool_apply_roundtrip_us".into(),
            unit: "us".into(),
            better: "lower".into(),
            multiproc: Some(21.4),
            cpython: Some(455.0),
        };
        assert_eq!(
            row.json(),
            r#"{"name": "pool_apply_roundtrip_us", "unit": "us", "better": "lower", "multiproc": 21.4, "cpython": 455.0}"#
        );
        let missing = Row { multiproc: None, ..row };
        assert!(missing.json().ends_with(r#""multiproc": null, "cpython": 455.0}"#));
        assert!(missing.table_line().contains("missing"));
    }

    #[test]
    fn values_read_well() {
        assert_eq!(human(4_612_345.4), "4,612,345");
        assert_eq!(human(412.34), "412.3");
        assert_eq!(human(12.345), "12.35");
        assert_eq!(human(0.1234), "0.123");
    }

    #[test]
    fn the_baseline_twins_every_published_figure() {
        let script = std::fs::read_to_string(root().join(BASELINE)).expect("baseline.py");
        let design = [
            "process_start_join_forkserver_us",
            "process_start_join_spawn_us",
            "pool_apply_roundtrip_us",
            "pool_map_chunk1_tasks_per_s",
            "pool_map_auto_tasks_per_s",
            "pool_cpu_speedup",
            "worker_idle_rss_kib",
            "pipe_msgs_per_s",
            "pipe_1mib_gib_per_s",
            "pipe_roundtrip_us",
            "queue_msgs_per_s",
            "joinable_queue_msgs_per_s",
            "lock_uncontended_ns",
            "event_wake_us",
            "barrier_pass_us",
            "manager_proxy_call_us",
        ];
        for name in design {
            assert!(script.contains(&format!("def {name}(")), "{BASELINE} lacks {name}");
        }
    }
}
