//! Seed: a child sends a list through a `Pipe`; the parent receives it.
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! expect: (42, None, "hello")

use multiproc::{Connection, Pipe, Process};

#[multiproc::task]
fn f(mut conn: Connection) {
    conn.blocking_send(&(42, None::<i32>, "hello")).expect("send");
    conn.close();
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let (mut parent_conn, child_conn) = Pipe::new()?;
    let mut p = Process::new(f, (child_conn,));
    p.start().await?;
    println!("{:?}", parent_conn.recv::<(i32, Option<i32>, String)>().await?); // prints "(42, None, "hello")"
    p.join().await?;
    Ok(())
}
