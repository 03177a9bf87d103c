//! Seed: a daemonic process is stopped when the main program ends; a
//! non-daemonic one is waited for.
//!
//! ```python
//! def foo():
//!     name = multiprocessing.current_process().name
//!     print("Starting %s " % name)
//!     time.sleep(3)
//!     print("Exiting %s " % name)
//!
//! if __name__ == '__main__':
//!     background_process = multiprocessing.Process(name='background_process', target=foo)
//!     background_process.daemon = True
//!     NO_background_process = multiprocessing.Process(name='NO_background_process', target=foo)
//!     NO_background_process.daemon = False
//!     background_process.start()
//!     NO_background_process.start()
//! ```
//!
//! expect: Starting NO_background_process
//! expect: Exiting NO_background_process

use std::time::Duration;

use multiproc::Process;

#[multiproc::task]
fn foo() {
    let name = multiproc::current_process().name;
    println!("Starting {name} ");
    std::thread::sleep(Duration::from_millis(300));
    println!("Exiting {name} ");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut background_process = Process::new(foo, ()).name("background_process");
    background_process.set_daemon(true)?;
    let mut no_background_process = Process::new(foo, ()).name("NO_background_process");
    no_background_process.set_daemon(false)?;
    background_process.start().await?;
    no_background_process.start().await?;
    Ok(())
}
