//! Seed: the worker sends a greeting through one end of a `Pipe`; the main
//! process receives it on the other.
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def worker(conn):
//!     conn.send("Hello from worker process!")
//!     conn.close()
//!
//! parent_conn, child_conn = Pipe()
//! p = Process(target=worker, args=(child_conn,))
//! p.start()
//! print(parent_conn.recv())  # 输出: Hello from worker process!
//! p.join()
//! ```
//!
//! expect: Hello from worker process!

use multiproc::{Connection, Pipe, Process};

#[multiproc::task]
fn worker(mut conn: Connection) {
    conn.blocking_send("Hello from worker process!").expect("send");
    conn.close();
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let (mut parent_conn, child_conn) = Pipe::new()?;
    let mut p = Process::new(worker, (child_conn,));
    p.start().await?;
    println!("{}", parent_conn.recv::<String>().await?); // 输出: Hello from worker process!
    p.join().await?;
    Ok(())
}
