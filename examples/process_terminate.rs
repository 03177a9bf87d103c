//! Seed: terminate a running process; its exit code is -15 (SIGTERM).
//!
//! ```python
//! def foo():
//!     print('Starting function')
//!     time.sleep(0.1)
//!     print('Finished function')
//!
//! if __name__ == '__main__':
//!     p = multiprocessing.Process(target=foo)
//!     print('Process before execution:', p, p.is_alive())
//!     p.start()
//!     print('Process running:', p, p.is_alive())
//!     p.terminate()
//!     print('Process terminated:', p, p.is_alive())
//!     p.join()
//!     print('Process joined:', p, p.is_alive())
//!     print('Process exit code:', p.exitcode)
//! ```
//!
//! expect: Process before execution: <Process name='Process-1' parent=
//! expect: initial> false
//! expect: started> true
//! expect: stopped exitcode=-SIGTERM> false
//! expect: Process exit code: Some(-15)

use std::time::Duration;

use multiproc::Process;

#[multiproc::task]
fn foo() {
    println!("Starting function");
    std::thread::sleep(Duration::from_millis(100));
    println!("Finished function");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut p = Process::new(foo, ());
    println!("Process before execution: {p} {}", p.is_alive());
    p.start().await?;
    println!("Process running: {p} {}", p.is_alive());
    p.terminate()?;
    println!("Process terminated: {p} {}", p.is_alive());
    p.join().await?;
    println!("Process joined: {p} {}", p.is_alive());
    println!("Process exit code: {:?}", p.exitcode());
    Ok(())
}
