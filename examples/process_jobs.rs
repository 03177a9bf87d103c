//! Seed: five processes, each started and joined in turn.
//!
//! ```python
//! def foo(i):
//!     print('called function in process: %s' % i)
//!
//! if __name__ == '__main__':
//!     process_jobs = []
//!     for i in range(5):
//!         p = multiprocessing.Process(target=foo, args=(i,))
//!         process_jobs.append(p)
//!         p.start()
//!         p.join()
//! ```
//!
//! expect: called function in process: 0
//! expect: called function in process: 4

use multiproc::Process;

#[multiproc::task]
fn foo(i: u32) {
    println!("called function in process: {i}");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut process_jobs = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(foo, (i,));
        p.start().await?;
        p.join().await?;
        process_jobs.push(p);
    }
    Ok(())
}
