//! Seed: a two-stage pipeline of pipes; each stage ends when its input
//! reaches EOF, which needs every copy of the sending end closed.
//!
//! ```python
//! def create_items(pipe):
//!     output_pipe, _ = pipe
//!     for item in range(10):
//!         output_pipe.send(item)
//!     output_pipe.close()
//!
//! def multiply_items(pipe_1, pipe_2):
//!     close, input_pipe = pipe_1
//!     close.close()
//!     output_pipe, _ = pipe_2
//!     try:
//!         while True:
//!             item = input_pipe.recv()
//!             output_pipe.send(item * item)
//!     except EOFError:
//!         output_pipe.close()
//!
//! if __name__ == '__main__':
//!     # 第一个进程管道发出数字
//!     pipe_1 = multiprocessing.Pipe(True)
//!     process_pipe_1 = multiprocessing.Process(target=create_items, args=(pipe_1,))
//!     process_pipe_1.start()
//!     # 第二个进程管道接收数字并计算
//!     pipe_2 = multiprocessing.Pipe(True)
//!     process_pipe_2 = multiprocessing.Process(target=multiply_items, args=(pipe_1, pipe_2,))
//!     process_pipe_2.start()
//!     pipe_1[0].close()
//!     pipe_2[0].close()
//!     try:
//!         while True:
//!             print(pipe_2[1].recv())
//!     except EOFError:
//!         print("End")
//! ```
//!
//! expect: 64
//! expect: 81
//! expect: End

use multiproc::{Connection, Error, Pipe, Process};

type Ends = (Connection, Connection);

#[multiproc::task]
fn create_items(pipe: Ends) {
    let (mut output_pipe, _) = pipe;
    for item in 0..10 {
        output_pipe.blocking_send(&item).expect("send");
    }
    output_pipe.close();
}

#[multiproc::task]
fn multiply_items(pipe_1: Ends, pipe_2: Ends) {
    let (mut close, mut input_pipe) = pipe_1;
    close.close();
    let (mut output_pipe, _) = pipe_2;
    loop {
        match input_pipe.blocking_recv::<i64>() {
            Ok(item) => output_pipe.blocking_send(&(item * item)).expect("send"),
            Err(Error::Eof) => {
                output_pipe.close();
                break;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Another handle on both ends, as Python passes the same pipe twice.
fn both(pipe: &Ends) -> multiproc::Result<Ends> {
    Ok((pipe.0.try_clone()?, pipe.1.try_clone()?))
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    // 第一个进程管道发出数字
    let mut pipe_1 = Pipe::new()?;
    let mut process_pipe_1 = Process::new(create_items, (both(&pipe_1)?,));
    process_pipe_1.start().await?;
    // 第二个进程管道接收数字并计算
    let mut pipe_2 = Pipe::new()?;
    let mut process_pipe_2 = Process::new(multiply_items, (both(&pipe_1)?, both(&pipe_2)?));
    process_pipe_2.start().await?;
    pipe_1.0.close();
    pipe_2.0.close();
    loop {
        match pipe_2.1.recv::<i64>().await {
            Ok(v) => println!("{v}"),
            Err(Error::Eof) => {
                println!("End");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    process_pipe_1.join().await?;
    process_pipe_2.join().await?;
    Ok(())
}
