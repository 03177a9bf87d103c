//! Seed: one process waits for an event, another waits with a timeout that
//! runs out first; then the main process sets it.
//!
//! ```python
//! def wait_for_event(e):
//!     print("wait_for_event: starting")
//!     e.wait()
//!     print("wairt_for_event: e.is_set()->" + str(e.is_set()))
//!
//! def wait_for_event_timeout(e, t):
//!     print("wait_for_event_timeout:starting")
//!     e.wait(t)
//!     print("wait_for_event_timeout:e.is_set->" + str(e.is_set()))
//!
//! if __name__ == "__main__":
//!     e = multiprocessing.Event()
//!     w1 = multiprocessing.Process(target=wait_for_event, args=(e,))
//!     w2 = multiprocessing.Process(target=wait_for_event_timeout, args=(e, 6))
//!     w1.start()
//!     w2.start()
//!     time.sleep(10)
//!     print("main: event setting")
//!     e.set()
//!     print("main: event is set")
//! ```
//!
//! expect: wait_for_event_timeout:e.is_set->false
//! expect: main: event is set
//! expect: wait_for_event: e.is_set()->true

use std::time::Duration;

use multiproc::{Event, Process};

#[multiproc::task]
fn wait_for_event(e: Event) {
    println!("wait_for_event: starting");
    e.blocking_wait().expect("wait");
    println!("wait_for_event: e.is_set()->{}", e.is_set());
}

#[multiproc::task]
fn wait_for_event_timeout(e: Event, t: Duration) {
    println!("wait_for_event_timeout:starting");
    e.blocking_wait_timeout(t).expect("wait");
    println!("wait_for_event_timeout:e.is_set->{}", e.is_set());
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let e = Event::new()?;
    let mut w1 = Process::new(wait_for_event, (e.clone(),));
    let mut w2 = Process::new(wait_for_event_timeout, (e.clone(), Duration::from_millis(60)));
    w1.start().await?;
    w2.start().await?;
    // The seed sleeps past the timeout; here we wait for the timed waiter itself.
    w2.join().await?;
    println!("main: event setting");
    e.set();
    println!("main: event is set");
    w1.join().await?;
    Ok(())
}
