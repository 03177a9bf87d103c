//! Tidy checks on the source tree, run as ordinary tests (`cargo test -p
//! xtask`, so `cargo xtask ci` runs them with the rest):
//!
//! - every `.rs` file opens with a `//!` line saying what it owns;
//! - `unsafe` lives in `crates/multiproc-sys` only (the library crates,
//!   examples, `src/` and benches have none, unsafe attributes included),
//!   and every other library crate's root says `#![forbid(unsafe_code)]`;
//! - in `multiproc-sys`, every `unsafe` block, impl and attribute has a
//!   `// SAFETY:` comment right above its statement, and every `unsafe fn` a
//!   `# Safety` doc section.

use std::path::{Path, PathBuf};

/// Directories whose `.rs` files tidy reads, relative to the root.
const TREES: &[&str] = &["crates", "src", "examples", "tests", "benches", "xtask"];
/// Where `unsafe` is forbidden (outside `crates/multiproc-sys`).
const SAFE_TREES: &[&str] = &["crates", "src", "examples", "benches"];
const SYS: &str = "crates/multiproc-sys";

/// The violations of one file, `path` relative to the root (`/`-separated).
pub fn check(path: &str, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    // A crate doc kept in a file (`#![doc = include_str!(…)]`) opens a file
    // as well; a file pulled in by `include!` cannot carry inner docs and
    // says where it is included instead.
    let opens = ["//!", "#![doc = include_str!(", "// Included by "];
    if !opens.iter().any(|o| text.starts_with(o)) {
        bad.push(format!("{path}:1: must open with a `//!` line saying what the file owns"));
    }
    let in_sys = path.starts_with(&format!("{SYS}/"));
    let guarded = SAFE_TREES.iter().any(|t| path.starts_with(&format!("{t}/")));
    if !in_sys && !guarded {
        return bad;
    }
    let crate_root = path.starts_with("crates/") && path.ends_with("/src/lib.rs");
    if crate_root && !in_sys && !text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]") {
        bad.push(format!("{path}: a library crate outside {SYS} must say `#![forbid(unsafe_code)]`"));
    }
    let raw: Vec<&str> = text.lines().collect();
    let code_text = code_only(text);
    let code: Vec<&str> = code_text.lines().collect();
    for (i, line) in code.iter().enumerate() {
        for at in keyword_positions(line, "unsafe") {
            let next = line[at + "unsafe".len()..].trim_start();
            let here = format!("{path}:{}", i + 1);
            if !in_sys {
                bad.push(format!("{here}: `unsafe` outside {SYS} (move it there behind a safe function or macro)"));
            } else if next.starts_with("fn ") && !next["fn ".len()..].trim_start().starts_with('(') {
                if !documents_safety(&raw, i) {
                    bad.push(format!("{here}: `unsafe fn` without a `# Safety` section in its doc comment"));
                }
            } else if next.starts_with("fn") || next.starts_with("extern \"C\" fn(") {
                // A function pointer type: nothing is done unsafely here.
            } else if !has_safety_comment(&raw, &code, i, at) {
                bad.push(format!("{here}: `unsafe` without a `// SAFETY:` comment right above its statement"));
            }
        }
    }
    bad
}

/// `text` with comments and the contents of string and char literals blanked
/// out (line breaks kept), so keywords are found in code only.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if at(0) == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if at(0) == 'r' && (at(1) == '"' || at(1) == '#') && literal_prefix_starts(&c, i) {
            // A raw string r"…" or r#"…"#; `r#ident` is a raw identifier.
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let close: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let start = i + 2 + hashes;
            let end = (start..c.len()).find(|&j| c[j..].starts_with(&close)).map_or(c.len(), |j| j + close.len());
            for &ch in &c[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else if at(0) == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if at(0) == '\'' && (at(1) == '\\' || (at(2) == '\'' && at(1) != '\'')) {
            // A char literal ('a', '\n', '\'', '\u{1F600}'); otherwise a lifetime.
            let from = if at(1) == '\\' { i + 3 } else { i + 2 };
            let end = (from..c.len()).find(|&j| c[j] == '\'' || c[j] == '\n').unwrap_or(c.len());
            for &ch in &c[i..=end.min(c.len() - 1)] {
                blank(&mut out, ch);
            }
            i = end + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` starts a literal (`r"`, `br"`) rather than ending
/// an identifier.
fn literal_prefix_starts(c: &[char], i: usize) -> bool {
    let before = |k: usize| if i >= k { c[i - k] } else { ' ' };
    !ident_char(before(1)) || (before(1) == 'b' && !ident_char(before(2)))
}

fn ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Byte offsets of `word` in `line` as a whole identifier.
fn keyword_positions(line: &str, word: &str) -> Vec<usize> {
    line.match_indices(word)
        .filter(|&(at, _)| {
            let before = line[..at].chars().next_back().unwrap_or(' ');
            let after = line[at + word.len()..].chars().next().unwrap_or(' ');
            !ident_char(before) && !ident_char(after)
        })
        .map(|(at, _)| at)
        .collect()
}

/// Whether the `unsafe` at line `i`, column `at` has a `// SAFETY:` comment
/// on its line before it, or in the comment lines right above its statement
/// (climbing over lines the statement continues from: `let x =`, `f(`,
/// `a,`).
fn has_safety_comment(raw: &[&str], code: &[&str], i: usize, at: usize) -> bool {
    if raw[i].get(..at).is_some_and(|before| before.contains("SAFETY:")) {
        return true;
    }
    let mut line = i;
    loop {
        let comments = (0..line).rev().take_while(|&j| raw[j].trim_start().starts_with("//")).collect::<Vec<_>>();
        if comments.iter().any(|&j| raw[j].contains("SAFETY:")) {
            return true;
        }
        let continues = |l: &str| {
            let l = l.trim_end();
            ["=", "(", ",", "=>", "|", "||", "&&"].iter().any(|end| l.ends_with(end))
        };
        if comments.is_empty() && line > 0 && continues(code[line - 1]) {
            line -= 1;
        } else {
            return false;
        }
    }
}

/// Whether the doc comment above the `unsafe fn` at line `i` (attributes may
/// sit between) has a `# Safety` section.
fn documents_safety(raw: &[&str], i: usize) -> bool {
    (0..i)
        .rev()
        .map(|j| raw[j].trim_start())
        .take_while(|l| l.starts_with("///") || l.starts_with("#[") || l.starts_with("//"))
        .any(|l| l.starts_with("///") && l.trim_start_matches('/').trim() == "# Safety")
}

/// Every `.rs` file tidy reads, with its root-relative `/`-separated path.
pub fn files(root: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    for tree in TREES {
        walk(&root.join(tree), &mut paths);
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).expect("under the root");
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            (rel, p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_tidy() {
        let files = files(&crate::root());
        assert!(files.iter().any(|(p, _)| p == "crates/multiproc-sys/src/lib.rs"), "tidy reads the sys crate");
        let bad: Vec<String> = files
            .iter()
            .flat_map(|(rel, p)| check(rel, &std::fs::read_to_string(p).expect("a readable source file")))
            .collect();
        assert!(bad.is_empty(), "tidy:\n{}", bad.join("\n"));
    }

    #[test]
    fn a_file_without_a_module_comment_is_caught() {
        assert_eq!(check("examples/x.rs", "use std::io;\n").len(), 1);
        assert_eq!(check("tests/it/x.rs", "// not a doc comment\n").len(), 1);
        assert!(check("examples/x.rs", "//! Says what it owns.\n").is_empty());
    }

    #[test]
    fn unsafe_outside_sys_is_caught() {
        let block = "//! x\nfn f() {\n    // SAFETY: fine\n    unsafe { g() }\n}\n";
        assert_eq!(check("crates/multiproc/src/a.rs", block).len(), 1);
        assert_eq!(check("examples/a.rs", "//! x\nunsafe fn g() {}\n").len(), 1);
        assert_eq!(check("src/bin/a.rs", "//! x\nunsafe impl Send for X {}\n").len(), 1);
        assert!(check("crates/multiproc-sys/src/a.rs", block).is_empty());
        assert!(check("tests/it/a.rs", block).is_empty(), "tests are not guarded");
    }

    #[test]
    fn the_word_in_comments_strings_and_lint_names_is_not_unsafe() {
        let text = "//! unsafe\n#![deny(unsafe_code)]\n/* unsafe { /* nested */ unsafe */\nconst A: &str = \"unsafe {\";\nconst B: &str = r#\"unsafe \"{\"#;\nconst C: char = '\"';\nconst D: [char; 2] = ['\\\\', '\\''];\nconst E: &[u8] = br\"unsafe \\\";\nfn f<'a>(x: &'a u8) -> &'a str { \"unsafe\" }\n// unsafe {\n";
        assert!(check("crates/multiproc/src/a.rs", text).is_empty(), "{:?}", check("crates/multiproc/src/a.rs", text));
    }

    #[test]
    fn an_unsafe_attribute_outside_sys_is_caught_even_with_an_expect() {
        let with = "//! x\n#[used]\n#[unsafe(link_section = \".init_array\")]\n#[expect(unsafe_code, reason = \"r\")]\nstatic B: fn() = b;\n";
        let without = "//! x\n#[used]\n#[unsafe(link_section = \".init_array\")]\nstatic B: fn() = b;\n";
        assert_eq!(check("crates/multiproc/src/b.rs", with).len(), 1);
        assert_eq!(check("crates/multiproc/src/b.rs", without).len(), 1);
        let sys = "//! x\n// SAFETY: the loader calls it once\n#[unsafe(link_section = \".init_array\")]\nstatic B: fn() = b;\n";
        assert!(check("crates/multiproc-sys/src/b.rs", sys).is_empty());
    }

    #[test]
    fn a_library_crate_root_must_forbid_unsafe_code() {
        assert_eq!(check("crates/multiproc/src/lib.rs", "//! x\n#![deny(unsafe_code)]\n").len(), 1);
        assert!(check("crates/multiproc/src/lib.rs", "//! x\n#![forbid(unsafe_code)]\n").is_empty());
        assert!(check("crates/multiproc-sys/src/lib.rs", "//! x\n").is_empty(), "the sys crate is the exception");
        assert!(check("crates/multiproc/src/pool/mod.rs", "//! x\n").is_empty(), "only crate roots");
    }

    #[test]
    fn sys_needs_safety_comments_right_above() {
        let sys = "crates/multiproc-sys/src/a.rs";
        let ok = [
            "//! x\nfn f() {\n    // SAFETY: why\n    // more\n    unsafe { g() }\n}\n",
            "//! x\nfn f() {\n    // SAFETY: why\n    let p =\n        unsafe { g() };\n}\n",
            "//! x\nfn f() {\n    x.map(|p| {\n        // SAFETY: why\n        unsafe { &*p }\n    })\n}\n",
            "//! x\n// SAFETY: plain memory\nunsafe impl Send for R {}\n",
            "//! x\n/// Does it.\n///\n/// # Safety\n/// Only when.\n#[inline]\npub unsafe fn g() {}\n",
            "//! x\nstatic F: unsafe fn() = g;\n",
        ];
        for text in ok {
            assert!(check(sys, text).is_empty(), "{text}: {:?}", check(sys, text));
        }
        let bad = [
            "//! x\nfn f() {\n    unsafe { g() }\n}\n",
            "//! x\nfn f() {\n    // SAFETY: about the line below\n    a();\n    unsafe { g() }\n}\n",
            "//! x\nfn f() {\n    // SAFETY: far above\n    // unrelated\n\n    unsafe { g() }\n}\n",
            "//! x\nunsafe impl Sync for R {}\n",
            "//! x\n/// Does it.\npub unsafe fn g() {}\n",
        ];
        for text in bad {
            assert_eq!(check(sys, text).len(), 1, "{text}");
        }
    }
}
