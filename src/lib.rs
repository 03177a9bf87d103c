//! Shared helpers for the examples and integration tests of `multiproc`.

/// The next number of a xorshift64 sequence (`state` must not be 0): the
/// cheap, seedable randomness the fault scenarios use to pick what to kill
/// and when, so a failing run can be replayed from its seed.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Where each thread of `pid` is, from `/proc`: name, tid, state, kernel
/// wait channel and system call, one thread per `; `-separated entry (for
/// the message of a test or scenario that found a process stuck).
pub fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return format!("{pid}: gone") };
    let mut lines = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default().trim().to_owned();
        let stat = read("stat");
        // The name may hold spaces and parentheses: the state follows the last ')'.
        let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("?");
        lines.push(format!(
            "{} {} state {state} wchan {} syscall {}",
            read("comm"),
            task.file_name().to_string_lossy(),
            read("wchan"),
            read("syscall")
        ));
    }
    lines.join("; ")
}
