//! Helpers shared by the test modules.

/// Declares `#[tokio::test]`s `NAME::forkserver` and `NAME::spawn` that run
/// `async fn NAME(method: StartMethod)` under each start method.
#[macro_export]
macro_rules! per_method {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn forkserver() {
                super::$name(multiproc::StartMethod::Forkserver).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn spawn() {
                super::$name(multiproc::StartMethod::Spawn).await
            }
        }
    )*};
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Whether `pid` is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    multiproc_sys::pidlock::process_alive(pid)
}
