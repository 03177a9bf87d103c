//! Seed: time sending 10^4, 10^5 and 10^6 numbers through a `Queue` to a
//! reader process. Other counts may be given as arguments.
//!
//! ```python
//! def reader_proc(queue):
//!     ## Read from the queue; this will be spawned as a separate Process
//!     while True:
//!         msg = queue.get()  # Read from the queue and do nothing
//!         if (msg == 'DONE'):
//!             break
//!
//! def writer(count, queue):
//!     ## Write to the queue
//!     for ii in range(0, count):
//!         queue.put(ii)  # Write 'count' numbers into the queue
//!     queue.put('DONE')
//!
//! if __name__ == '__main__':
//!     pqueue = Queue()  # writer() writes to pqueue from _this_ process
//!     for count in [10 ** 4, 10 ** 5, 10 ** 6]:
//!         ### reader_proc() reads from pqueue as a separate process
//!         reader_p = Process(target=reader_proc, args=((pqueue),))
//!         reader_p.daemon = True
//!         reader_p.start()  # Launch reader_proc() as a separate python process
//!
//!         _start = time.time()
//!         writer(count, pqueue)  # Send a lot of stuff to reader()
//!         reader_p.join()  # Wait for the reader to finish
//!         print("Sending {0} numbers to Queue() took {1} seconds".format(count,
//!                                                                        (time.time() - _start)))
//! ```
//! (`None` stands for 'DONE'.)
//!
//! expect: Sending 10000 numbers to Queue() took
//! expect: Sending 100000 numbers to Queue() took
//! expect: Sending 1000000 numbers to Queue() took

use std::time::Instant;

use multiproc::{Process, Queue};

#[multiproc::task]
fn reader_proc(queue: Queue<Option<u64>>) {
    // Read from the queue; this will be spawned as a separate Process
    loop {
        let msg = queue.blocking_get().expect("get"); // Read from the queue and do nothing
        if msg.is_none() {
            break;
        }
    }
}

async fn writer(count: u64, queue: &Queue<Option<u64>>) -> multiproc::Result<()> {
    // Write to the queue
    for ii in 0..count {
        queue.put(Some(ii)).await?; // Write 'count' numbers into the queue
    }
    queue.put(None).await
}

fn counts() -> Vec<u64> {
    let given: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if given.is_empty() { vec![10_u64.pow(4), 10_u64.pow(5), 10_u64.pow(6)] } else { given }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let pqueue = Queue::new()?; // writer() writes to pqueue from _this_ process
    for count in counts() {
        // reader_proc() reads from pqueue as a separate process
        let mut reader_p = Process::new(reader_proc, (pqueue.clone(),));
        reader_p.set_daemon(true)?;
        reader_p.start().await?; // Launch reader_proc() as a separate process

        let start = Instant::now();
        writer(count, &pqueue).await?; // Send a lot of stuff to reader()
        reader_p.join().await?; // Wait for the reader to finish
        println!("Sending {count} numbers to Queue() took {} seconds", start.elapsed().as_secs_f64());
    }
    Ok(())
}
