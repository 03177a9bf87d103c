//! Who this process is: `current_process()`, `parent_process()`,
//! `active_children()`, `cpu_count()`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::wire::ProcessInfo;

static ME: OnceLock<ProcessInfo> = OnceLock::new();
static NEXT_CHILD: AtomicU32 = AtomicU32::new(1);

/// Called once in a child before its target runs.
pub(crate) fn enter_child(info: ProcessInfo) {
    let _ = ME.set(info);
}

/// This process as `multiprocessing.current_process()` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    /// `"MainProcess"` in the process that was not started by multiproc.
    pub name: String,
    /// This process's pid (`os.getpid()`).
    pub pid: u32,
    /// Whether it was started as a daemon (it may not start children then).
    pub daemon: bool,
    /// Python's `_identity`: `[]` in the main process, `[2]` for its second
    /// child, `[2, 1]` for that child's first child.
    pub identity: Vec<u32>,
}

/// The process that started this one (`multiprocessing.parent_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    /// Its name (`"MainProcess"` for the program's main process).
    pub name: String,
    /// Its pid (`os.getppid()` in the child).
    pub pid: u32,
}

/// A running child of this process (`multiprocessing.active_children()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildProcess {
    /// The name given with `Process::name` (or the default `Process-N`).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Whether it is daemonic.
    pub daemon: bool,
}

/// This process: its name, pid, daemon flag and identity
/// (`multiprocessing.current_process()`).
///
/// ```no_run
/// #[multiproc::task]
/// fn who() -> String {
///     // print(current_process().name)
///     multiproc::current_process().name
/// }
/// ```
pub fn current_process() -> CurrentProcess {
    match ME.get() {
        Some(info) => CurrentProcess {
            name: info.name.clone(),
            pid: std::process::id(),
            daemon: info.daemon,
            identity: info.identity.clone(),
        },
        None => {
            CurrentProcess { name: "MainProcess".into(), pid: std::process::id(), daemon: false, identity: Vec::new() }
        }
    }
}

/// `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    ME.get().map(|info| ParentProcess { name: info.parent_name.clone(), pid: info.parent_pid })
}

/// Children started by this process that have not exited yet.
pub fn active_children() -> Vec<ChildProcess> {
    crate::tree::supervisor::active_children()
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Identity and default name for the next child this process starts.
pub(crate) fn next_child_identity(prefix: &str) -> (Vec<u32>, String) {
    let mut identity = ME.get().map(|i| i.identity.clone()).unwrap_or_default();
    identity.push(NEXT_CHILD.fetch_add(1, Ordering::Relaxed));
    let digits: Vec<String> = identity.iter().map(u32::to_string).collect();
    let name = format!("{prefix}-{}", digits.join(":"));
    (identity, name)
}
