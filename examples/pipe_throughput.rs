//! Seed: time sending 10^4, 10^5 and 10^6 numbers through a `Pipe` to a
//! reader process. Other counts may be given as arguments.
//!
//! ```python
//! def reader_proc(pipe):
//!     ## Read from the pipe; this will be spawned as a separate Process
//!     p_output, p_input = pipe
//!     p_input.close()  # We are only reading
//!     while True:
//!         msg = p_output.recv()  # Read from the output pipe and do nothing
//!         if msg == 'DONE':
//!             break
//!
//! def writer(count, p_input):
//!     for ii in range(0, count):
//!         p_input.send(ii)  # Write 'count' numbers into the input pipe
//!     p_input.send('DONE')
//!
//! if __name__ == '__main__':
//!     for count in [10 ** 4, 10 ** 5, 10 ** 6]:
//!         # Pipes are unidirectional with two endpoints:  p_input ------> p_output
//!         p_output, p_input = Pipe()  # writer() writes to p_input from _this_ process
//!         reader_p = Process(target=reader_proc, args=((p_output, p_input),))
//!         reader_p.daemon = True
//!         reader_p.start()  # Launch the reader process
//!
//!         p_output.close()  # We no longer need this part of the Pipe()
//!         _start = time.time()
//!         writer(count, p_input)  # Send a lot of stuff to reader_proc()
//!         p_input.close()
//!         reader_p.join()
//!         print("Sending {0} numbers to Pipe() took {1} seconds".format(count,
//!                                                                       (time.time() - _start)))
//! ```
//! (`None` stands for 'DONE'.)
//!
//! expect: Sending 10000 numbers to Pipe() took
//! expect: Sending 100000 numbers to Pipe() took
//! expect: Sending 1000000 numbers to Pipe() took

use std::time::Instant;

use multiproc::{Connection, Pipe, Process};

#[multiproc::task]
fn reader_proc(pipe: (Connection, Connection)) {
    // Read from the pipe; this will be spawned as a separate Process
    let (mut p_output, mut p_input) = pipe;
    p_input.close(); // We are only reading
    loop {
        let msg: Option<u64> = p_output.blocking_recv().expect("recv"); // Read from the output pipe and do nothing
        if msg.is_none() {
            break;
        }
    }
}

async fn writer(count: u64, p_input: &mut Connection) -> multiproc::Result<()> {
    for ii in 0..count {
        p_input.send(&Some(ii)).await?; // Write 'count' numbers into the input pipe
    }
    p_input.send(&None::<u64>).await
}

fn counts() -> Vec<u64> {
    let given: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if given.is_empty() { vec![10_u64.pow(4), 10_u64.pow(5), 10_u64.pow(6)] } else { given }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    for count in counts() {
        // Pipes are unidirectional with two endpoints:  p_input ------> p_output
        let (mut p_output, mut p_input) = Pipe::new()?; // writer() writes to p_input from _this_ process
        let mut reader_p = Process::new(reader_proc, ((p_output.try_clone()?, p_input.try_clone()?),));
        reader_p.set_daemon(true)?;
        reader_p.start().await?; // Launch the reader process

        p_output.close(); // We no longer need this part of the Pipe()
        let start = Instant::now();
        writer(count, &mut p_input).await?; // Send a lot of stuff to reader_proc()
        p_input.close();
        reader_p.join().await?;
        println!("Sending {count} numbers to Pipe() took {} seconds", start.elapsed().as_secs_f64());
    }
    Ok(())
}
