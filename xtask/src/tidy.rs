//! Tidy checks that run as ordinary tests (`cargo test -p xtask`).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("readable dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn crate_sources() -> Vec<PathBuf> {
        let mut v = Vec::new();
        rust_files(&crate::root().join("crates"), &mut v);
        v
    }

    #[test]
    fn every_file_says_what_it_owns() {
        for f in crate_sources() {
            let text = std::fs::read_to_string(&f).expect("readable");
            assert!(text.starts_with("//!"), "{} must open with a //! line saying what it owns", f.display());
        }
    }

    #[test]
    fn unsafe_lives_in_the_sys_crate_with_a_safety_comment() {
        for f in crate_sources() {
            let text = std::fs::read_to_string(&f).expect("readable");
            let in_sys = f.components().any(|c| c.as_os_str() == "multiproc-sys");
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if !code.contains("unsafe {") && !code.contains("unsafe impl") {
                    continue;
                }
                assert!(in_sys, "{}:{}: unsafe outside multiproc-sys", f.display(), i + 1);
                let preceding = lines[..i].iter().rev().take(6).any(|l| l.contains("SAFETY:"));
                assert!(preceding, "{}:{}: unsafe without a // SAFETY: comment above it", f.display(), i + 1);
            }
        }
    }
}
