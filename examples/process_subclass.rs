//! Seed: subclass `Process` and override `run` (a `Target` here).
//!
//! ```python
//! class NewProcess(Process):
//!     def __init__(self, num):
//!         self.num = num
//!         super().__init__()
//!
//!     def run(self):
//!         while True:
//!             print(f'我是进程 {self.num} , 我的pid是: {os.getpid()}')
//!             time.sleep(1)
//!
//! for i in range(2):
//!     p = NewProcess(i)
//!     p.start()
//!
//! class MyProcess(multiprocessing.Process):
//!     def run(self):
//!         print('called run method in process: %s' % self.name)
//!
//! for i in range(5):
//!     p = MyProcess()
//!     p.start()
//!     p.join()
//! ```
//! (The seed's `while True` loop runs three rounds here so the program ends.)
//!
//! expect: 我是进程 0
//! expect: 我是进程 1
//! expect: called run method in process: MyProcess-3
//! expect: called run method in process: MyProcess-7

use std::time::Duration;

use multiproc::{Process, Target};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct NewProcess {
    num: u32,
}

#[multiproc::target]
impl Target for NewProcess {
    fn run(self) {
        for _ in 0..3 {
            println!("我是进程 {} , 我的pid是: {}", self.num, std::process::id());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MyProcess;

#[multiproc::target]
impl Target for MyProcess {
    fn run(self) {
        println!("called run method in process: {}", multiproc::current_process().name);
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut running = Vec::new();
    for i in 0..2 {
        let mut p = Process::from_target(NewProcess { num: i });
        p.start().await?;
        running.push(p);
    }
    for _ in 0..5 {
        let mut p = Process::from_target(MyProcess);
        p.start().await?;
        p.join().await?;
    }
    for p in &running {
        p.join().await?;
    }
    Ok(())
}
