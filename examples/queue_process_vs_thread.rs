//! Seed: the same job in the main process, in two threads and in two
//! processes, each worker putting its result on one `Queue` (threads can put
//! on the same queue as processes).
//!
//! ```python
//! import multiprocessing as mp
//! import threading as td
//! import time
//!
//! def job(q):
//!     res = 0
//!     for i in range(1000000):
//!         res += i+i**2+i**3
//!     q.put(res) # queue
//!
//! def multicore():
//!     q = mp.Queue()
//!     p1 = mp.Process(target=job, args=(q,))
//!     p2 = mp.Process(target=job, args=(q,))
//!     p1.start()
//!     p2.start()
//!     p1.join()
//!     p2.join()
//!     res1 = q.get()
//!     res2 = q.get()
//!     print('multicore:',res1 + res2)
//!
//! def multithread():
//!     q = mp.Queue() # thread可放入process同样的queue中
//!     t1 = td.Thread(target=job, args=(q,))
//!     t2 = td.Thread(target=job, args=(q,))
//!     t1.start()
//!     t2.start()
//!     t1.join()
//!     t2.join()
//!     res1 = q.get()
//!     res2 = q.get()
//!     print('multithread:', res1 + res2)
//!
//! def normal():
//!     res = 0
//!     for _ in range(2):
//!         for i in range(1000000):
//!             res += i + i**2 + i**3
//!     print('normal:', res)
//!
//! if __name__ == '__main__':
//!     st = time.time()
//!     normal()
//!     st1 = time.time()
//!     print('normal time:', st1 - st)
//!     multithread()
//!     st2 = time.time()
//!     print('multithread time:', st2 - st1)
//!     multicore()
//!     print('multicore time:', time.time() - st2)
//! ```
//! (Python's unbounded integers are `u128` here; Rust threads run in
//! parallel, there is no GIL to make them slower.)
//!
//! expect: normal: 499999666667166666000000
//! expect: multithread: 499999666667166666000000
//! expect: multicore: 499999666667166666000000
//! expect: multicore time:

use std::time::Instant;

use multiproc::{Process, Queue};

fn work() -> u128 {
    let mut res: u128 = 0;
    for i in 0..1_000_000u128 {
        res += i + i.pow(2) + i.pow(3);
    }
    res
}

#[multiproc::task]
fn job(q: Queue<u128>) {
    q.blocking_put(work()).expect("put"); // queue
}

async fn multicore() -> multiproc::Result<()> {
    let q = Queue::new()?;
    let mut p1 = Process::new(job, (q.clone(),));
    let mut p2 = Process::new(job, (q.clone(),));
    p1.start().await?;
    p2.start().await?;
    p1.join().await?;
    p2.join().await?;
    let res1 = q.get().await?;
    let res2 = q.get().await?;
    println!("multicore: {}", res1 + res2);
    Ok(())
}

async fn multithread() -> multiproc::Result<()> {
    let q = Queue::<u128>::new()?; // thread可放入process同样的queue中
    let t1 = std::thread::spawn({
        let q = q.clone();
        move || q.blocking_put(work())
    });
    let t2 = std::thread::spawn({
        let q = q.clone();
        move || q.blocking_put(work())
    });
    t1.join().expect("thread 1")?;
    t2.join().expect("thread 2")?;
    let res1 = q.get().await?;
    let res2 = q.get().await?;
    println!("multithread: {}", res1 + res2);
    Ok(())
}

fn normal() {
    let mut res: u128 = 0;
    for _ in 0..2 {
        for i in 0..1_000_000u128 {
            res += i + i.pow(2) + i.pow(3);
        }
    }
    println!("normal: {res}");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let st = Instant::now();
    normal();
    let st1 = Instant::now();
    println!("normal time: {}", (st1 - st).as_secs_f64());
    multithread().await?;
    let st2 = Instant::now();
    println!("multithread time: {}", (st2 - st1).as_secs_f64());
    multicore().await?;
    println!("multicore time: {}", st2.elapsed().as_secs_f64());
    Ok(())
}
