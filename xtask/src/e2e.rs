//! `cargo xtask e2e [NAME…]`: runs every example (and every fault scenario
//! binary in `src/bin` that declares runs) and fails on a non-zero exit,
//! missing output, a hang, a process left behind (alive or defunct), an fd
//! held open by something that outlived the run, or a new `/dev/shm` entry.
//!
//! A program declares what it expects in its opening `//!` comment:
//! `//! expect: TEXT` (stdout must contain TEXT; one line each) and
//! `//! e2e-args: A B` (run it with these arguments; several lines mean several
//! runs; an example without any runs once with none, a binary in `src/bin`
//! without any is not run).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{procs, root};

/// A run that takes longer has hung.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long what a finished run leaves behind gets to disappear (daemonic
/// children are terminated with a 1 s grace period at exit).
const DRAIN: Duration = Duration::from_secs(2);

/// One run of one program.
#[derive(Debug, PartialEq)]
struct Run {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    expect: Vec<String>,
}

pub fn run(filter: &[String]) -> Result<(), String> {
    let built = crate::build(&["build", "--examples", "--bins"])?;
    let runs = plan(&built, filter)?;
    let mut failures = Vec::new();
    for r in &runs {
        match check(r) {
            Ok(took) => println!("ok    {:>6.2}s  {}", took.as_secs_f64(), r.label),
            Err((took, why)) => {
                println!("FAIL  {:>6.2}s  {}\n{}", took.as_secs_f64(), r.label, indent(&why));
                failures.push(format!("{}: {}", r.label, why.lines().next().unwrap_or_default()));
            }
        }
    }
    println!("e2e: {} runs, {} failed", runs.len(), failures.len());
    if failures.is_empty() { Ok(()) } else { Err(format!("e2e failed:\n  {}", failures.join("\n  "))) }
}

/// Every run of every program, in file-name order: examples (each at least
/// once), then `src/bin` programs that declare `e2e-args`.
fn plan(built: &[crate::Artifact], filter: &[String]) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let mut matched = BTreeSet::new();
    for (dir, kind, always) in [("examples", "example", true), ("src/bin", "bin", false)] {
        for source in sources(&root().join(dir)) {
            let Some(artifact) = built.iter().find(|a| a.kind == kind && same_file(&a.src_path, &source)) else {
                return Err(format!("cargo built nothing from {}", source.display()));
            };
            if !filter.is_empty() && !filter.contains(&artifact.name) {
                continue;
            }
            matched.insert(artifact.name.clone());
            let text =
                std::fs::read_to_string(&source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
            let (arg_sets, expect) = header(&text);
            let arg_sets = if arg_sets.is_empty() && always { vec![Vec::new()] } else { arg_sets };
            for args in arg_sets {
                let label = std::iter::once(artifact.name.clone()).chain(args.iter().cloned()).collect::<Vec<_>>();
                runs.push(Run {
                    label: label.join(" "),
                    program: artifact.executable.clone(),
                    args,
                    expect: expect.clone(),
                });
            }
        }
    }
    let unknown: Vec<&String> = filter.iter().filter(|f| !matched.contains(*f)).collect();
    if !unknown.is_empty() {
        return Err(format!("no example or scenario named {unknown:?}"));
    }
    Ok(runs)
}

/// The `.rs` files directly in `dir`, and `dir/NAME/main.rs` for
/// multi-file programs.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            if p.is_dir() {
                Some(p.join("main.rs")).filter(|m| m.is_file())
            } else {
                p.extension().is_some_and(|x| x == "rs").then_some(p)
            }
        })
        .collect();
    v.sort();
    v
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || a.canonicalize().ok().is_some_and(|a| b.canonicalize().is_ok_and(|b| a == b))
}

/// The `//! e2e-args:` runs and `//! expect:` lines of a program's opening
/// comment.
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

/// Runs `r` once; the time it took, and what went wrong if anything did.
fn check(r: &Run) -> Result<Duration, (Duration, String)> {
    let shm_before = shm_entries();
    let fds_before = procs::open_fds();
    let mut cmd = Command::new(&r.program);
    cmd.args(&r.args).current_dir(root());
    let o = procs::run(cmd, TIMEOUT, DRAIN).map_err(|e| (Duration::ZERO, e))?;

    let mut problems = Vec::new();
    match o.status {
        None => problems.push(format!("hung for {} s; killed with its process group", TIMEOUT.as_secs())),
        Some(s) if !s.success() => problems.push(format!("exited with {s}")),
        Some(_) => {}
    }
    for e in &r.expect {
        if !o.stdout.contains(e.as_str()) {
            problems.push(format!("stdout lacks {e:?}"));
        }
    }
    if !o.leftovers.is_empty() {
        problems.push(format!("left behind {} s after exit (killed now): {}", DRAIN.as_secs(), list(&o.leftovers)));
    }
    if !o.pipe_holders.is_empty() {
        problems.push(format!("its stdout/stderr fd leaked into (killed now): {}", list(&o.pipe_holders)));
    }
    let fds_after = procs::open_fds();
    if o.pipe_holders.is_empty() && fds_after > fds_before {
        problems.push(format!("xtask holds {} more fds after the run", fds_after - fds_before));
    }
    let leaked = new_shm_entries(&shm_before);
    if !leaked.is_empty() {
        problems.push(format!("new /dev/shm entries: {leaked:?}"));
    }
    if problems.is_empty() {
        return Ok(o.elapsed);
    }
    let mut why = problems.join("\n");
    for (name, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if !text.trim().is_empty() {
            why.push_str(&format!("\n--- {name} (last lines) ---\n{}", tail(text, 30)));
        }
    }
    Err((o.elapsed, why))
}

fn list(ps: &[procs::Proc]) -> String {
    ps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Entries of `/dev/shm` that were not there before and stay. Other programs
/// on the machine may create short-lived entries meanwhile; an entry that
/// disappears within the drain period was not leaked.
fn new_shm_entries(before: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let new: Vec<String> = shm_entries().difference(before).cloned().collect();
        if new.is_empty() || Instant::now() > deadline {
            return new;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_runs_and_expectations() {
        let text = "//! Seed: x\n//!\n//! e2e-args: a b\n//! e2e-args: c\n//! expect: hello world\n\nuse x;\n//! expect: not header";
        let (args, expect) = header(text);
        assert_eq!(args, vec![vec!["a".to_string(), "b".into()], vec!["c".to_string()]]);
        assert_eq!(expect, vec!["hello world".to_string()]);
    }

    #[test]
    fn every_example_is_planned_and_names_filter() {
        let root = root();
        let artifact = |kind: &str, dir: &str, name: &str| crate::Artifact {
            kind: kind.into(),
            name: name.into(),
            src_path: sources(&root.join(dir)).into_iter().find(|p| stem(p) == name).expect("listed"),
            executable: format!("/t/{name}").into(),
        };
        let mut built: Vec<crate::Artifact> =
            sources(&root.join("examples")).iter().map(|p| artifact("example", "examples", stem(p))).collect();
        built.extend(sources(&root.join("src/bin")).iter().map(|p| artifact("bin", "src/bin", stem(p))));
        let all = plan(&built, &[]).expect("plan");
        assert!(all.len() >= built.iter().filter(|a| a.kind == "example").count());
        let hello = plan(&built, &["process_hello".into()]).expect("plan");
        assert_eq!(hello.len(), 1);
        assert!(!hello[0].expect.is_empty(), "process_hello declares its output");
        assert!(plan(&built, &["no_such_example".into()]).is_err());
        assert!(plan(&built[1..], &[]).is_err(), "an example cargo did not build is an error");
    }

    fn sh(script: &str, expect: &[&str]) -> Run {
        Run {
            label: "sh".into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            expect: expect.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let _serial = procs::serial();
        check(&sh("echo hello world; echo noise >&2", &["hello", "o w"])).expect("passes");
    }

    #[test]
    fn each_kind_of_failure_is_named() {
        let _serial = procs::serial();
        let why = |r: Run| check(&r).expect_err("fails").1;
        assert!(why(sh("echo hello", &["goodbye"])).contains("stdout lacks \"goodbye\""));
        assert!(why(sh("echo partial; exit 7", &[])).contains("exited with exit status: 7"));
        let left = why(sh("sleep 30 >/dev/null 2>&1 & echo started", &["started"]));
        assert!(left.contains("left behind") && left.contains("sleep"), "{left}");
        let name = format!("xtask-e2e-test-{}", std::process::id());
        let shm = why(sh(&format!(": > /dev/shm/{name}"), &[]));
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(&name));
        assert!(shm.contains("/dev/shm") && shm.contains(&name), "{shm}");
    }

    /// A program's name: its file's, or its directory's for `NAME/main.rs`.
    fn stem(p: &Path) -> &str {
        let p = if p.ends_with("main.rs") { p.parent().expect("a directory") } else { p };
        p.file_stem().and_then(|s| s.to_str()).expect("utf-8 name")
    }
}
