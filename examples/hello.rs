//! Seed: a child process says hello with its pid and its parent's pid.
//!
//! ```python
//! def f(name):
//!     print('hello', name, os.getpid(), os.getppid())
//! p = Process(target=f, args=('bob',)); p.start(); p.join()
//! ```

#[multiproc::task]
fn f(name: String) {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process().expect("a child has a parent");
    println!("hello {name}: pid {} ({}), parent pid {}", me.pid, me.name, parent.pid);
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("main process pid {}", std::process::id());
    let mut p = multiproc::Process::new(f, ("bob".to_string(),));
    p.start().await?;
    let code = p.join().await?;
    println!("child exited with {code}");
    Ok(())
}
