//! `cargo xtask bench [--json] [--runs N] [--compare BASE.json] [--svg FILE]
//! [NAME…]`: every benchmark figure of the project (`benches/figures/`)
//! beside CPython's (`xtask/py/baseline.py`) and the OS floor
//! (`xtask/floor.c`), all measured in the same run.
//!
//! Each figure is measured `--runs` times (3 by default), multiproc then
//! CPython in turn, so both sides see the same minutes of the machine; the
//! table shows the median and the range (min–max) of each side, and the ratio
//! of the medians oriented so that above 1 means multiproc is better. The OS
//! floor is measured as many times, before the figures, and each figure it
//! bounds shows how many times the floor it is.
//!
//! `--compare BASE.json` reads a run saved with `--json` and prints, per
//! figure, the change of multiproc's median and of its ratio to CPython (on a
//! loaded machine only the ratio, taken in one run, means much). `--svg FILE`
//! draws the ratios as a bar chart (`chart.rs`).
//!
//! A figure one side does not know (not implemented yet) is reported as
//! missing; a figure that fails is reported as failed; neither stops the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{chart, json, procs, root};

/// A figure taking longer is stuck.
const TIMEOUT: Duration = Duration::from_secs(600);
const DRAIN: Duration = Duration::from_secs(2);
const BASELINE: &str = "xtask/py/baseline.py";
const DEFAULT_RUNS: usize = 3;
const USAGE: &str = "usage: cargo xtask bench [--json] [--runs N] [--compare BASE.json] [--svg FILE] [NAME…]";

/// Figures that the OS floor bounds, and DESIGN.md's (or the issue's) target
/// for the ratio to it.
const FLOORS: &[(&str, &str, &str)] = &[
    ("process_start_join_forkserver_us", "fork_exit_wait_us", "≤ 2x"),
    ("pool_apply_roundtrip_us", "unix_socket_roundtrip_us", "≤ 2x"),
    ("pool_apply_roundtrip_shm_us", "unix_socket_roundtrip_us", "≤ 0.5x"),
    ("pipe_roundtrip_us", "unix_socket_roundtrip_us", "≤ CPython"),
    ("pipe_roundtrip_shm_us", "unix_socket_roundtrip_us", "≤ 0.5x"),
    ("event_wake_us", "futex_roundtrip_us", "≤ 3x"),
    ("lock_uncontended_ns", "cas_lock_ns", "≤ 100 ns"),
];

/// The median and range of one side's runs of a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stat {
    /// `None` for no values. The median of an even count is the mean of the
    /// middle two.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], runs: n })
    }

    fn show(&self) -> String {
        if self.runs > 1 {
            format!("{} [{}–{}]", human(self.median), human(self.min), human(self.max))
        } else {
            human(self.median)
        }
    }
}

/// One figure's row.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub better: String,
    pub multiproc: Option<Stat>,
    pub cpython: Option<Stat>,
    /// The OS floor figure bounding this one, and its median in this run.
    pub floor: Option<(String, f64)>,
}

/// `a` over `b`, oriented so that above 1 means `a` is better.
fn better_ratio(better: &str, a: f64, b: f64) -> Option<f64> {
    if a <= 0.0 || b <= 0.0 {
        return None;
    }
    Some(if better == "lower" { b / a } else { a / b })
}

impl Row {
    /// How many times better multiproc is (above 1: multiproc wins).
    pub fn ratio(&self) -> Option<f64> {
        better_ratio(&self.better, self.multiproc?.median, self.cpython?.median)
    }

    /// How many times the OS floor multiproc's median is (a time: above 1).
    pub fn floor_times(&self) -> Option<f64> {
        let (m, (_, f)) = (self.multiproc?.median, self.floor.as_ref()?);
        (*f > 0.0).then(|| m / f)
    }

    /// The line DESIGN.md fixes for `--json` (`name`, `unit`, `better`,
    /// `multiproc`, `cpython`: the medians), then the ranges, the number of
    /// runs and the bounding OS floor.
    fn json(&self) -> String {
        let num =
            |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{:?}", (v * 1000.0).round() / 1000.0));
        let m = self.multiproc;
        let c = self.cpython;
        format!(
            "{{\"name\": {}, \"unit\": {}, \"better\": {}, \"multiproc\": {}, \"cpython\": {}, \"min\": {}, \"max\": {}, \
             \"runs\": {}, \"cpython_min\": {}, \"cpython_max\": {}, \"cpython_runs\": {}, \"floor_name\": {}, \
             \"floor\": {}}}",
            json::quote(&self.name),
            json::quote(&self.unit),
            json::quote(&self.better),
            num(m.map(|s| s.median)),
            num(c.map(|s| s.median)),
            num(m.map(|s| s.min)),
            num(m.map(|s| s.max)),
            m.map_or(0, |s| s.runs),
            num(c.map(|s| s.min)),
            num(c.map(|s| s.max)),
            c.map_or(0, |s| s.runs),
            self.floor.as_ref().map_or_else(|| "null".to_owned(), |(n, _)| json::quote(n)),
            num(self.floor.as_ref().map(|(_, v)| *v)),
        )
    }

    /// A row read back from a `--json` line (`None` without a name).
    fn from_json(line: &str) -> Option<Self> {
        let f = |k: &str| json::field(line, k).and_then(|v| v.parse::<f64>().ok());
        let stat = |median: &str, min: &str, max: &str, runs: &str| {
            let median = f(median)?;
            Some(Stat {
                median,
                min: f(min).unwrap_or(median),
                max: f(max).unwrap_or(median),
                runs: f(runs).map_or(1, |r| r as usize),
            })
        };
        Some(Self {
            name: json::field(line, "name")?,
            unit: json::field(line, "unit").unwrap_or_default(),
            better: json::field(line, "better").unwrap_or_default(),
            multiproc: stat("multiproc", "min", "max", "runs"),
            cpython: stat("cpython", "cpython_min", "cpython_max", "cpython_runs"),
            floor: json::field(line, "floor_name").zip(f("floor")),
        })
    }

    fn table_line(&self) -> String {
        let show = |v: Option<Stat>| v.map_or_else(|| "missing".to_owned(), |s| s.show());
        let ratio = self.ratio().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let floor = self.floor_times().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let unit =
            if self.unit.is_empty() { String::new() } else { format!("{} ({} is better)", self.unit, self.better) };
        format!(
            "{:<34} | {:>28} | {:>28} | {ratio:>7} | {floor:>7} | {unit}",
            self.name,
            show(self.multiproc),
            show(self.cpython)
        )
    }
}

fn header() -> String {
    format!(
        "{:<34} | {:>28} | {:>28} | {:>7} | {:>7} | unit\n{}",
        "figure",
        "multiproc median [min–max]",
        "CPython median [min–max]",
        "ratio",
        "floor",
        "-".repeat(140)
    )
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

/// The command line of `bench`.
#[derive(Debug, Default, PartialEq)]
struct Options {
    json: bool,
    runs: usize,
    compare: Option<PathBuf>,
    svg: Option<PathBuf>,
    names: Vec<String>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options { runs: DEFAULT_RUNS, ..Options::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value; {USAGE}"));
        match a.as_str() {
            "--json" => o.json = true,
            "--runs" => {
                let v = value("--runs")?;
                o.runs = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| format!("--runs {v}: not a count ≥ 1"))?;
            }
            "--compare" => o.compare = Some(value("--compare")?.into()),
            "--svg" => o.svg = Some(value("--svg")?.into()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}; {USAGE}")),
            name => o.names.push(name.to_owned()),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = options(args)?;
    let json = opts.json;
    // Notes go to stderr under --json, so stdout stays one object per line.
    let note = |s: &str| if json { eprintln!("{s}") } else { println!("{s}") };
    // Read the base first: a wrong path fails before minutes of measuring.
    let base = match &opts.compare {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--compare {}: {e}", path.display()))?
                .lines()
                .filter_map(Row::from_json)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };

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
    let names = if opts.names.is_empty() {
        let mut all = rust_names.clone();
        all.extend(py_names.iter().flatten().filter(|n| !rust_names.contains(n)).cloned());
        all
    } else {
        opts.names.clone()
    };

    let floor = match floor(opts.runs) {
        Ok(floor) => {
            let shown: Vec<String> =
                floor.iter().map(|(name, unit, s)| format!("{name} {} {unit}", s.show())).collect();
            note(&format!("OS floor (xtask/floor.c, {} runs, this run): {}", opts.runs, shown.join(" · ")));
            floor
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
        let knows_rust = rust_names.contains(name);
        let knows_py = py_names.as_ref().is_some_and(|n| n.contains(name));
        if !knows_rust {
            if knows_py || py_names.is_none() {
                problems.push(format!("{name}: no multiproc figure yet (benches/figures)"));
            } else {
                problems.push(format!("{name}: unknown figure (neither benches/figures nor {BASELINE} has it)"));
            }
        } else if py_names.is_some() && !knows_py {
            problems.push(format!("{name}: no CPython twin in {BASELINE}"));
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..opts.runs {
            if knows_rust {
                match measure(&figures, &["--json", name], &mut problems) {
                    Ok(line) => {
                        row.unit = json::field(&line, "unit").unwrap_or_default();
                        row.better = json::field(&line, "better").unwrap_or_default();
                        ours.extend(json::field(&line, "multiproc").and_then(|v| v.parse::<f64>().ok()));
                    }
                    Err(e) => problems.push(format!("{name}: multiproc figure failed: {e}")),
                }
            }
            if knows_py {
                match measure(
                    Path::new("python3"),
                    &[script.to_str().ok_or("non-UTF-8 path")?, "--json", name],
                    &mut problems,
                ) {
                    Ok(line) => {
                        theirs.extend(json::field(&line, "cpython").and_then(|v| v.parse::<f64>().ok()));
                        if row.unit.is_empty() {
                            row.unit = json::field(&line, "unit").unwrap_or_default();
                            row.better = json::field(&line, "better").unwrap_or_default();
                        }
                    }
                    Err(e) => problems.push(format!("{name}: CPython figure failed: {e}")),
                }
            }
        }
        row.multiproc = Stat::of(&ours);
        row.cpython = Stat::of(&theirs);
        row.floor = FLOORS.iter().find(|(figure, ..)| figure == name).and_then(|(_, bound, _)| {
            floor.iter().find(|(n, ..)| n == bound).map(|(n, _, s)| ((*n).clone(), s.median))
        });
        println!("{}", if json { row.json() } else { row.table_line() });
        rows.push(row);
    }
    if !json {
        println!(
            "(ratio: how many times better multiproc's median is than CPython's, above 1 means multiproc wins; \
             floor: how many times the OS floor's median)"
        );
    }
    for (figure, bound, target) in FLOORS {
        let Some(row) = rows.iter().find(|r| r.name == *figure) else { continue };
        if let (Some(m), Some(x), Some((_, b))) = (row.multiproc, row.floor_times(), &row.floor) {
            note(&format!(
                "{figure} {} = {x:.2}x the OS floor {bound} {} (target: {target})",
                human(m.median),
                human(*b)
            ));
        }
    }
    if let Some(base) = &base {
        note(&compare(base, &rows));
    }
    if let Some(path) = &opts.svg {
        chart::draw(path, &rows)?;
        note(&format!("chart: {}", path.display()));
    }
    for p in &problems {
        note(&format!("note: {p}"));
    }
    Ok(())
}

/// The `--compare` table: per figure in both runs, multiproc's median then
/// and now, its change (positive: better), and the same for the ratio to
/// CPython, which a loaded machine moves less. A change is called out only
/// when both agree and exceed 10 %, and the two runs' ranges do not overlap.
fn compare(base: &[Row], now: &[Row]) -> String {
    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:+.0}%", (r - 1.0) * 100.0));
    let mut out = format!(
        "compared with the base run:\n{:<34} | {:>12} | {:>12} | {:>7} | {:>12} | {:>7} | verdict\n{}",
        "figure",
        "base",
        "now",
        "change",
        "vs CPython",
        "change",
        "-".repeat(110)
    );
    for row in now {
        let Some(was) = base.iter().find(|b| b.name == row.name) else {
            out.push_str(&format!("\n{:<34} | (not in the base run)", row.name));
            continue;
        };
        let better = if row.better.is_empty() { &was.better } else { &row.better };
        let own = row.multiproc.zip(was.multiproc).and_then(|(n, w)| better_ratio(better, n.median, w.median));
        let rel = row.ratio().zip(was.ratio()).map(|(n, w)| n / w);
        // Ranges that overlap say the runs cannot tell the two apart.
        let overlap = row
            .multiproc
            .zip(was.multiproc)
            .is_some_and(|(n, w)| n.runs > 1 && w.runs > 1 && n.min <= w.max && w.min <= n.max);
        let verdict = match (own, rel) {
            _ if overlap => "~ (ranges overlap)",
            (Some(a), Some(b)) if a > 1.1 && b > 1.1 => "better",
            (Some(a), Some(b)) if a < 1.0 / 1.1 && b < 1.0 / 1.1 => "WORSE",
            (Some(a), None) if a > 1.1 => "better?",
            (Some(a), None) if a < 1.0 / 1.1 => "worse?",
            _ => "~",
        };
        let show = |s: Option<Stat>| s.map_or_else(|| "-".to_owned(), |s| human(s.median));
        let ratios = match (was.ratio(), row.ratio()) {
            (Some(w), Some(n)) => format!("{w:.2}→{n:.2}x"),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "\n{:<34} | {:>12} | {:>12} | {:>7} | {:>12} | {:>7} | {verdict}",
            row.name,
            show(was.multiproc),
            show(row.multiproc),
            pct(own),
            ratios,
            pct(rel)
        ));
    }
    out
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

/// Compiles `xtask/floor.c` into the target directory and runs it `runs`
/// times: per line (`name value unit`), the name, the unit and the values'
/// median and range, in the program's order.
fn floor(runs: usize) -> Result<Vec<(String, String, Stat)>, String> {
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
    let mut seen: Vec<(String, String, Vec<f64>)> = Vec::new();
    for _ in 0..runs {
        for line in lines(&capture(&mut Command::new(&exe))?) {
            let mut words = line.split_whitespace();
            let (Some(name), Some(Ok(value)), unit) = (words.next(), words.next().map(str::parse::<f64>), words.next())
            else {
                return Err(format!("floor.c printed an unreadable line: {line}"));
            };
            match seen.iter_mut().find(|(n, ..)| n == name) {
                Some((.., values)) => values.push(value),
                None => seen.push((name.to_owned(), unit.unwrap_or_default().to_owned(), vec![value])),
            }
        }
    }
    Ok(seen.into_iter().filter_map(|(n, u, v)| Some((n, u, Stat::of(&v)?))).collect())
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

    fn one(v: f64) -> Option<Stat> {
        Stat::of(&[v])
    }

    #[test]
    fn ratios_say_how_many_times_better_multiproc_is() {
        let lower = Row { better: "lower".into(), multiproc: one(20.0), cpython: one(400.0), ..Row::default() };
        assert_eq!(lower.ratio(), Some(20.0));
        let higher = Row { better: "higher".into(), multiproc: one(2e6), cpython: one(1e5), ..Row::default() };
        assert_eq!(higher.ratio(), Some(20.0));
        assert_eq!(Row { cpython: None, ..higher }.ratio(), None);
    }

    #[test]
    fn medians_and_ranges() {
        let s = Stat::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(Stat::of(&[f64::NAN]), None);
    }

    #[test]
    fn json_lines_are_the_shape_design_fixes() {
        let row = Row {
            name: "pool_apply_roundtrip_us".into(),
            unit: "us".into(),
            better: "lower".into(),
            multiproc: Stat::of(&[21.4, 20.0, 30.0]),
            cpython: one(455.0),
            floor: Some(("unix_socket_roundtrip_us".into(), 10.7)),
        };
        assert!(
            row.json().starts_with(
                r#"{"name": "pool_apply_roundtrip_us", "unit": "us", "better": "lower", "multiproc": 21.4, "cpython": 455.0, "min": 20.0, "max": 30.0, "runs": 3,"#
            ),
            "{}",
            row.json()
        );
        assert_eq!(row.floor_times(), Some(2.0));
        // What --compare reads back is what was written.
        assert_eq!(Row::from_json(&row.json()).as_ref(), Some(&row));
        let missing = Row { multiproc: None, ..row };
        assert!(missing.json().contains(r#""multiproc": null, "cpython": 455.0,"#));
        assert!(missing.table_line().contains("missing"));
    }

    #[test]
    fn a_line_of_the_old_format_still_compares() {
        let old =
            r#"{"name": "pipe_roundtrip_us", "unit": "us", "better": "lower", "multiproc": 60.0, "cpython": 45.0}"#;
        let was = Row::from_json(old).unwrap();
        assert_eq!(was.multiproc, one(60.0));
        let now = Row { multiproc: one(30.0), cpython: one(45.0), ..was.clone() };
        let table = compare(&[was], &[now]);
        let line = table.lines().find(|l| l.starts_with("pipe_roundtrip_us")).unwrap();
        assert!(line.contains("+100%") && line.ends_with("better"), "{line}");
    }

    #[test]
    fn options_parse() {
        let args: Vec<String> =
            ["--runs", "5", "--json", "x_us", "--svg", "a.svg"].iter().map(|s| (*s).to_owned()).collect();
        let o = options(&args).unwrap();
        assert_eq!((o.runs, o.json, o.names, o.svg), (5, true, vec!["x_us".to_owned()], Some("a.svg".into())));
        assert!(options(&["--runs".to_owned(), "0".to_owned()]).is_err());
        assert!(options(&["--runs".to_owned()]).is_err());
        assert!(options(&["--fast".to_owned()]).is_err());
        assert_eq!(options(&[]).unwrap().runs, DEFAULT_RUNS);
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
