//! Seed: the parent finishes first without joining; the child still runs to
//! the end, because a program waits for its non-daemonic children at exit.
//!
//! ```python
//! def run():
//!     print("子进程开启")
//!     time.sleep(2)
//!     print("子进程结束")
//!
//! if __name__ == "__main__":
//!     print("父进程启动")
//!     p = Process(target=run)
//!     p.start()
//!     # p.join()
//!     print("父进程结束")
//! ```
//!
//! expect: 父进程启动
//! expect: 父进程结束
//! expect: 子进程开启
//! expect: 子进程结束

use std::time::Duration;

use multiproc::Process;

#[multiproc::task]
fn run() {
    println!("子进程开启");
    std::thread::sleep(Duration::from_millis(200));
    println!("子进程结束");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("父进程启动");
    let mut p = Process::new(run, ());
    p.start().await?;
    // p.join().await?;
    println!("父进程结束");
    Ok(())
}
