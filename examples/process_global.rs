//! Seed: a global variable is not shared: the child changes its own copy.
//!
//! ```python
//! num = 100
//!
//! def run():
//!     print("子进程开始")
//!     global num
//!     num += 1
//!     print(f"子进程num:{num}" )
//!     print("子进程结束")
//!
//! if __name__ == "__main__":
//!     print("父进程开始")
//!     p = Process(target=run)
//!     p.start()
//!     p.join()
//!     print("父进程结束。num:%s" % num)
//! ```
//!
//! expect: 父进程开始
//! expect: 子进程num:101
//! expect: 父进程结束。num:100

use std::sync::atomic::{AtomicI32, Ordering};

use multiproc::Process;

static NUM: AtomicI32 = AtomicI32::new(100);

#[multiproc::task]
fn run() {
    println!("子进程开始");
    let num = NUM.fetch_add(1, Ordering::SeqCst) + 1;
    println!("子进程num:{num}");
    println!("子进程结束");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("父进程开始");
    let mut p = Process::new(run, ());
    p.start().await?;
    p.join().await?;
    println!("父进程结束。num:{}", NUM.load(Ordering::SeqCst));
    Ok(())
}
