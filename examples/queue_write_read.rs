//! Seed: one process writes to a `Queue`, another reads forever; the parent
//! joins the writer, then terminates the reader.
//!
//! ```python
//! from multiprocessing import Process, Queue
//! import os, time
//!
//! def write(q):
//!     print("启动Write子进程:%s" % os.getpid())
//!     for i in ["A", "B", "C", "D"]:
//!         q.put(i)  # 写入队列
//!         time.sleep(1)
//!     print("结束Write子进程:%s" % os.getpid())
//!
//! def read(q):
//!     print("启动Write子进程:%s" % os.getpid())
//!     while True:  # 阻塞,等待获取write的值
//!         value = q.get(True)
//!         print(value)
//!     print("结束Write子进程:%s" % os.getpid())  # 不会执行
//!
//! if __name__ == "__main__":
//!     # 父进程创建队列,并传递给子进程
//!     q = Queue()
//!     pw = Process(target=write, args=(q,))
//!     pr = Process(target=read, args=(q,))
//!     pw.start()
//!     pr.start()
//!
//!     pw.join()
//!     # pr进程是一个死循环,无法等待其结束,只能强行结束
//!     pr.terminate()
//!     print("父进程结束")
//! ```
//! (The writer sleeps 0.1 s instead of 1 s.)
//!
//! expect: 启动Write子进程:
//! expect: A
//! expect: B
//! expect: C
//! expect: 结束Write子进程:
//! expect: 父进程结束

use std::time::Duration;

use multiproc::{Process, Queue};

#[multiproc::task]
fn write(q: Queue<String>) {
    println!("启动Write子进程:{}", std::process::id());
    for i in ["A", "B", "C", "D"] {
        q.blocking_put(i.into()).expect("put"); // 写入队列
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("结束Write子进程:{}", std::process::id());
}

#[multiproc::task]
fn read(q: Queue<String>) {
    println!("启动Write子进程:{}", std::process::id());
    loop {
        // 阻塞,等待获取write的值
        let value = q.blocking_get().expect("get");
        println!("{value}");
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    // 父进程创建队列,并传递给子进程
    let q = Queue::<String>::new()?;
    let mut pw = Process::new(write, (q.clone(),));
    let mut pr = Process::new(read, (q.clone(),));
    pw.start().await?;
    pr.start().await?;

    pw.join().await?;
    // pr进程是一个死循环,无法等待其结束,只能强行结束
    pr.terminate()?;
    pr.join().await?;
    println!("父进程结束");
    Ok(())
}
