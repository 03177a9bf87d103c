//! Builds the C static initialiser `tests/c/static_init.c` with the system C
//! compiler and links its object into the `native_init` program (an object
//! on the link line is always kept, with its `.init_array` entry).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "tests/c/static_init.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("static_init.o");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-c", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "`{cc}` failed to compile {src}");
    println!("cargo:rustc-link-arg-bin=native_init={}", out.display());
}
