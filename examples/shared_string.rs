//! Seed: share a string between processes.
//!
//! ```python
//! from ctypes import c_char_p
//! str_val = mp.Value(c_char_p, b"Hello World")
//! ```
//! (Python's version shares a pointer, which only means something after
//! `fork`; here the bytes themselves live in shared memory.)
//!
//! expect: before: Hello World
//! expect: after: Hello from the child

use multiproc::{Process, SharedString};

#[multiproc::task]
fn change(s: SharedString) {
    s.blocking_set("Hello from the child").expect("fits its capacity");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let str_val = SharedString::new(64, "Hello World")?;
    println!("before: {}", str_val.get().await?);
    let mut p = Process::new(change, (str_val.clone(),));
    p.start().await?;
    p.join().await?;
    println!("after: {}", str_val.get().await?);
    Ok(())
}
