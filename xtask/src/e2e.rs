//! `cargo xtask e2e`: runs every example (and every fault scenario binary
//! that declares runs) and fails on a wrong exit, missing output, a hang, a
//! process left behind, or a new `/dev/shm` entry.
//!
//! A program declares what it expects in its opening `//!` comment:
//! `//! expect: TEXT` (a line of stdout must contain TEXT) and
//! `//! e2e-args: A B` (run it with these arguments; several lines mean several
//! runs; a binary in `src/bin` without any is not run).

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, root};

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long leftovers of a finished run get to disappear (daemonic children
/// are terminated with a grace period at exit).
const DRAIN: Duration = Duration::from_secs(3);

struct Run {
    program: PathBuf,
    label: String,
    args: Vec<String>,
    expect: Vec<String>,
}

pub fn run(filter: &[String]) -> Result<(), String> {
    cargo(&["build", "--examples", "--bins"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let mut runs = Vec::new();
    for (dir, out, all) in [("examples", target.join("debug/examples"), true), ("src/bin", target.join("debug"), false)]
    {
        for source in sources(&root().join(dir))? {
            let name = source.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            if !filter.is_empty() && !filter.contains(&name) {
                continue;
            }
            let text = std::fs::read_to_string(&source).map_err(|e| format!("read {}: {e}", source.display()))?;
            let (arg_sets, expect) = header(&text);
            let arg_sets = if arg_sets.is_empty() && all { vec![Vec::new()] } else { arg_sets };
            for args in arg_sets {
                let label = if args.is_empty() { name.clone() } else { format!("{name} {}", args.join(" ")) };
                runs.push(Run { program: out.join(&name), label, args, expect: expect.clone() });
            }
        }
    }
    let mut failures = Vec::new();
    for r in &runs {
        let t = Instant::now();
        match check(r) {
            Ok(()) => println!("ok    {:>7.2}s  {}", t.elapsed().as_secs_f64(), r.label),
            Err(e) => {
                println!("FAIL  {:>7.2}s  {}: {e}", t.elapsed().as_secs_f64(), r.label);
                failures.push(format!("{}: {e}", r.label));
            }
        }
    }
    println!("e2e: {} runs, {} failed", runs.len(), failures.len());
    if failures.is_empty() { Ok(()) } else { Err(format!("e2e failures:\n  {}", failures.join("\n  "))) }
}

fn sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut v: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "rs")).collect();
    v.sort();
    Ok(v)
}

/// The `//! e2e-args:` runs and `//! expect:` lines of a program's header.
fn header(text: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut args = Vec::new();
    let mut expect = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with("//!") || l.trim().is_empty()) {
        let line = line.trim_start_matches("//!").trim();
        if let Some(a) = line.strip_prefix("e2e-args:") {
            args.push(a.split_whitespace().map(str::to_owned).collect());
        } else if let Some(e) = line.strip_prefix("expect:") {
            expect.push(e.trim().to_owned());
        }
    }
    (args, expect)
}

fn check(r: &Run) -> Result<(), String> {
    let shm_before = shm_entries();
    let mut child = Command::new(&r.program)
        .args(&r.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {}: {e}", r.program.display()))?;
    let group = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(group);
            let _ = child.wait();
            return Err(format!("hung for {}s; killed", TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let leftovers = drain_group(group);
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!("exited with {status}; stderr:\n{err}"));
    }
    for e in &r.expect {
        if !out.lines().any(|l| l.contains(e.as_str())) {
            problems.push(format!("no line of stdout contains {e:?}"));
        }
    }
    if !leftovers.is_empty() {
        problems.push(format!("processes left behind (killed now): {leftovers:?}"));
    }
    let leaked: Vec<String> = shm_entries().difference(&shm_before).cloned().collect();
    if !leaked.is_empty() {
        problems.push(format!("new /dev/shm entries: {leaked:?}"));
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{}\n--- stdout ---\n{out}", problems.join("\n"))) }
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Processes (alive or zombie) whose process group is `group`.
fn group_members(group: u32) -> Vec<(u32, String)> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc_dir
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let pgrp: u32 = fields.get(2)?.parse().ok()?;
            (pgrp == group).then(|| (pid, format!("{} [{}]", comm.split('(').nth(1).unwrap_or("?"), fields[0])))
        })
        .collect()
}

/// Waits for the group to empty; kills and returns whatever remains.
fn drain_group(group: u32) -> Vec<(u32, String)> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let left = group_members(group);
        if left.is_empty() {
            return left;
        }
        if Instant::now() > deadline {
            kill_group(group);
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_group(group: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
}

#[cfg(test)]
mod tests {
    use super::header;

    #[test]
    fn header_lists_runs_and_expectations() {
        let text = "//! Seed: x\n//!\n//! e2e-args: a b\n//! e2e-args: c\n//! expect: hello world\n\nuse x;\n//! expect: not header";
        let (args, expect) = header(text);
        assert_eq!(args, vec![vec!["a".to_string(), "b".into()], vec!["c".to_string()]]);
        assert_eq!(expect, vec!["hello world".to_string()]);
    }
}
