//! Seed: the ids of every process involved, `active_children()` and `cpu_count()`.
//!
//! ```python
//! def info(title):
//!     print(title)
//!     print('module name:', __name__)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//!
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     info('main')
//!     p = Process(target=f, args=('bob',))
//!     p.start()
//!     for p in multiprocessing.active_children():
//!         print(f'子进程名称: {p.name}  id: { str(p.pid) }' )
//!     print('进程结束')
//!     print(f'CPU核心数量: { str(multiprocessing.cpu_count()) }')
//!     p.join()
//! ```
//!
//! expect: main
//! expect: 子进程名称: Process-1
//! expect: CPU核心数量:

use multiproc::Process;

fn info(title: &str) {
    println!("{title}");
    println!("module name: {}", module_path!());
    println!("parent process: {}", nix::unistd::getppid());
    println!("process id: {}", std::process::id());
}

#[multiproc::task]
fn f(name: String) {
    info("function f");
    println!("hello {name}");
    // Stay alive until the parent has listed its children and stops us.
    loop {
        std::thread::park();
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    info("main");
    let mut p = Process::new(f, ("bob".to_string(),));
    p.start().await?;
    for c in multiproc::active_children() {
        println!("子进程名称: {}  id: {}", c.name, c.pid);
    }
    println!("进程结束");
    println!("CPU核心数量: {}", multiproc::cpu_count());
    p.terminate()?;
    p.join().await?;
    Ok(())
}
