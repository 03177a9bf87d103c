//! Seed: start one process that prints its argument, its pid and its parent's pid.
//!
//! ```python
//! def func(s):
//!     print(s, os.getpid(), os.getppid())
//!
//! if __name__ == '__main__':
//!     print(os.getpid())
//!     print('main process start...')
//!     p = Process(target=func, args=('hello', ))
//!     p.start()
//!     p.join()
//!     print('main process end!')
//! ```
//!
//! expect: main process start...
//! expect: hello
//! expect: main process end!

use multiproc::Process;

#[multiproc::task]
fn func(s: String) {
    let parent = multiproc::parent_process().expect("a child has a parent");
    println!("{s} {} {}", std::process::id(), parent.pid);
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("{}", std::process::id());
    println!("main process start...");
    let mut p = Process::new(func, ("hello".to_string(),));
    p.start().await?;
    p.join().await?;
    println!("main process end!");
    Ok(())
}
