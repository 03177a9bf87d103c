//! Seed: `Process` subclasses exchanging items through a `Queue` (twins of
//! subclasses are `Target`s).
//!
//! ```python
//! class Producer(multiprocessing.Process):
//!     def __init__(self, queue):
//!         multiprocessing.Process.__init__(self)
//!         self.queue = queue
//!
//!     def run(self):
//!         for i in range(10):
//!             item = random.randint(0, 256)
//!             self.queue.put(item)
//!             print("Process Producer : item %d appended to queue %s" % (item, self.name))
//!             time.sleep(1)
//!             print("The size of queue is %s" % self.queue.qsize())
//!
//! class Consumer(multiprocessing.Process):
//!     def __init__(self, queue):
//!         multiprocessing.Process.__init__(self)
//!         self.queue = queue
//!
//!     def run(self):
//!         while True:
//!             if self.queue.empty():
//!                 print("the queue is empty")
//!                 break
//!             else:
//!                 time.sleep(2)
//!                 item = self.queue.get()
//!                 print('Process Consumer : item %d popped from by %s \n' % (item, self.name))
//!                 time.sleep(1)
//!
//! if __name__ == '__main__':
//!     queue = multiprocessing.Queue()
//!     process_producer = Producer(queue)
//!     process_consumer = Consumer(queue)
//!     process_producer.start()
//!     process_consumer.start()
//!     process_producer.join()
//!     process_consumer.join()
//! ```
//! (Sleeps are scaled down tenfold.)
//!
//! expect: appended to queue Producer-1
//! expect: The size of queue is

use std::time::Duration;

use multiproc::{Process, Queue, Target, current_process};
use serde::{Deserialize, Serialize};

/// `random.randint(0, 256)` without a dependency: a xorshift seeded from the
/// clock and the pid.
fn randint(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % 257
}

#[derive(Serialize, Deserialize)]
struct Producer {
    queue: Queue<u64>,
}

#[multiproc::target]
impl Target for Producer {
    fn run(self) {
        let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos())
            as u64
            | u64::from(std::process::id());
        for _ in 0..10 {
            let item = randint(&mut seed);
            self.queue.blocking_put(item).expect("put");
            println!("Process Producer : item {item} appended to queue {}", current_process().name);
            std::thread::sleep(Duration::from_millis(100));
            println!("The size of queue is {}", self.queue.qsize());
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Consumer {
    queue: Queue<u64>,
}

#[multiproc::target]
impl Target for Consumer {
    fn run(self) {
        loop {
            // As in the seed: `empty()` is a snapshot, so this consumer may
            // stop while the producer still has items to put (or stop at
            // once, if it starts first). A real consumer waits for a
            // sentinel or a count instead.
            if self.queue.empty() {
                println!("the queue is empty");
                break;
            } else {
                std::thread::sleep(Duration::from_millis(200));
                let item = self.queue.blocking_get().expect("get");
                println!("Process Consumer : item {item} popped from by {} \n", current_process().name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let queue = Queue::new()?;
    let mut process_producer = Process::from_target(Producer { queue: queue.clone() });
    let mut process_consumer = Process::from_target(Consumer { queue: queue.clone() });
    process_producer.start().await?;
    process_consumer.start().await?;
    process_producer.join().await?;
    process_consumer.join().await?;
    Ok(())
}
