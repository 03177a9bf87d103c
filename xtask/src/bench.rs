//! `cargo xtask bench [--json] [NAME…]`: every benchmark figure of the
//! project beside CPython's, measured in the same run, with the ratio
//! oriented so that above 1 means multiproc is better. The OS floor (socket
//! and futex round trips, fork) is printed for reference.

use std::collections::BTreeMap;
use std::process::Command;

use crate::root;

/// One figure as printed by `benches/figures` or `xtask/py/baseline.py`.
#[derive(Debug, Default, Clone)]
struct Figure {
    unit: String,
    better: String,
    multiproc: Option<f64>,
    cpython: Option<f64>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let json = args.iter().any(|a| a == "--json");
    let names: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let mut figures: BTreeMap<String, Figure> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();

    let mut rust = vec!["bench", "--quiet", "--bench", "figures", "--", "--json"];
    rust.extend(names.iter().copied());
    for (name, obj) in parse_lines(&output("cargo", &rust)?) {
        let f = figures.entry(name.clone()).or_default();
        f.unit = field(&obj, "unit").unwrap_or_default();
        f.better = field(&obj, "better").unwrap_or_default();
        f.multiproc = field(&obj, "multiproc").and_then(|v| v.parse().ok());
        order.push(name);
    }

    let script = root().join("xtask/py/baseline.py");
    let mut py = vec![script.to_str().expect("utf-8 path"), "--json"];
    let wanted: Vec<String> =
        if names.is_empty() { order.clone() } else { names.iter().map(|s| s.to_string()).collect() };
    py.extend(wanted.iter().map(String::as_str));
    let python_note = match output("python3", &py) {
        Ok(out) => {
            for (name, obj) in parse_lines(&out) {
                let f = figures.entry(name.clone()).or_default();
                f.cpython = field(&obj, "cpython").and_then(|v| v.parse().ok());
                if f.unit.is_empty() {
                    f.unit = field(&obj, "unit").unwrap_or_default();
                    f.better = field(&obj, "better").unwrap_or_default();
                }
                if !order.contains(&name) {
                    order.push(name);
                }
            }
            None
        }
        Err(e) => Some(format!("CPython column empty: {e}")),
    };

    if json {
        for name in &order {
            let f = &figures[name];
            println!(
                r#"{{"name": "{name}", "unit": "{}", "better": "{}", "multiproc": {}, "cpython": {}}}"#,
                f.unit,
                f.better,
                num(f.multiproc),
                num(f.cpython)
            );
        }
        return Ok(());
    }
    println!("{:<36} {:>14} {:>14} {:>8}  unit", "figure", "multiproc", "CPython", "ratio");
    for name in &order {
        let f = &figures[name];
        let ratio = match (f.multiproc, f.cpython) {
            (Some(m), Some(c)) if m > 0.0 && c > 0.0 => {
                format!("{:.1}x", if f.better == "lower" { c / m } else { m / c })
            }
            _ => "-".into(),
        };
        let show = |v: Option<f64>| v.map_or_else(|| "missing".to_owned(), |v| format!("{v:.2}"));
        println!("{name:<36} {:>14} {:>14} {ratio:>8}  {}", show(f.multiproc), show(f.cpython), f.unit);
    }
    println!("(ratio above 1: multiproc is better by that factor)");
    if let Some(note) = python_note {
        println!("note: {note}");
    }
    match floor() {
        Ok(lines) => println!("OS floor on this machine now: {}", lines.trim().replace('\n', "; ")),
        Err(e) => println!("note: OS floor not measured: {e}"),
    }
    Ok(())
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| format!("{v:.3}"))
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {} failed ({})", args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lines that are JSON objects, keyed by their "name".
fn parse_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| Some((field(l, "name")?, l.to_owned())))
        .collect()
}

/// The value of `"key": value` in a flat JSON object (strings unquoted).
fn field(obj: &str, key: &str) -> Option<String> {
    let at = obj.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = obj[at..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return Some(s[..s.find('"')?].to_owned());
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned()).filter(|v| v != "null")
}

/// Builds and runs `xtask/floor.c`.
fn floor() -> Result<String, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), Into::into);
    let exe = target.join("os-floor");
    let src = root().join("xtask/floor.c");
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .map_err(|e| format!("no C compiler: {e}"))?;
    if !built.success() {
        return Err("cc failed".into());
    }
    output(exe.to_str().ok_or("non-utf-8 path")?, &[])
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_fields_of_a_figure_line() {
        let l = r#"{"name": "pool_apply_roundtrip_us", "unit": "us", "better": "lower", "multiproc": 21.4, "cpython": null}"#;
        assert_eq!(field(l, "name").as_deref(), Some("pool_apply_roundtrip_us"));
        assert_eq!(field(l, "multiproc").as_deref(), Some("21.4"));
        assert_eq!(field(l, "cpython"), None);
    }
}
