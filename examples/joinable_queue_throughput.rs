//! Seed: time sending 10^4, 10^5 and 10^6 numbers through a `JoinableQueue`
//! to a reader that marks each done. Other counts may be given as arguments.
//!
//! ```python
//! def reader_proc(queue):
//!     ## Read from the queue; this will be spawned as a separate Process
//!     while True:
//!         msg = queue.get()  # Read from the queue and do nothing
//!         queue.task_done()
//!
//! def writer(count, queue):
//!     for ii in range(0, count):
//!         queue.put(ii)  # Write 'count' numbers into the queue
//!
//! if __name__ == '__main__':
//!     for count in [10 ** 4, 10 ** 5, 10 ** 6]:
//!         jqueue = JoinableQueue()  # writer() writes to jqueue from _this_ process
//!         # reader_proc() reads from jqueue as a different process...
//!         reader_p = Process(target=reader_proc, args=((jqueue),))
//!         reader_p.daemon = True
//!         reader_p.start()  # Launch the reader process
//!         _start = time.time()
//!         writer(count, jqueue)  # Send a lot of stuff to reader_proc() (in different process)
//!         jqueue.join()  # Wait for the reader to finish
//!         print("Sending {0} numbers to JoinableQueue() took {1} seconds".format(count,
//!                                                                                (time.time() - _start)))
//! ```
//! (The daemonic readers are terminated when the program exits, as in Python.)
//!
//! expect: Sending 10000 numbers to JoinableQueue() took
//! expect: Sending 100000 numbers to JoinableQueue() took
//! expect: Sending 1000000 numbers to JoinableQueue() took

use std::time::Instant;

use multiproc::{JoinableQueue, Process};

#[multiproc::task]
fn reader_proc(queue: JoinableQueue<u64>) {
    // Read from the queue; this will be spawned as a separate Process
    loop {
        let _msg = queue.blocking_get().expect("get"); // Read from the queue and do nothing
        queue.task_done().expect("task_done");
    }
}

async fn writer(count: u64, queue: &JoinableQueue<u64>) -> multiproc::Result<()> {
    for ii in 0..count {
        queue.put(ii).await?; // Write 'count' numbers into the queue
    }
    Ok(())
}

fn counts() -> Vec<u64> {
    let given: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if given.is_empty() { vec![10_u64.pow(4), 10_u64.pow(5), 10_u64.pow(6)] } else { given }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut readers = Vec::new();
    for count in counts() {
        let jqueue = JoinableQueue::new()?; // writer() writes to jqueue from _this_ process
        // reader_proc() reads from jqueue as a different process...
        let mut reader_p = Process::new(reader_proc, (jqueue.clone(),));
        reader_p.set_daemon(true)?;
        reader_p.start().await?; // Launch the reader process
        let start = Instant::now();
        writer(count, &jqueue).await?; // Send a lot of stuff to reader_proc() (in different process)
        jqueue.join().await?; // Wait for the reader to finish
        println!("Sending {count} numbers to JoinableQueue() took {} seconds", start.elapsed().as_secs_f64());
        readers.push(reader_p);
    }
    Ok(())
}
