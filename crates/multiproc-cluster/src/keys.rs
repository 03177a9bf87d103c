//! The names of everything the cluster keeps in Redis, in one place.
//!
//! Tasks of one build travel on their own stream, so an agent of another
//! build never even sees them:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{prefix}:{build}:tasks` | stream, group `agents` | one entry per chunk of work |
//! | `{prefix}:{build}:agents` | sorted set | live agents, scored by their last heartbeat (server time, ms) |
//! | `{prefix}:{build}:dead` | stream, capped | dead letters: poison and malformed entries |
//! | `{prefix}:reply:{caller}` | stream, expiring | one entry per finished chunk, for one caller |

/// The consumer group every agent of a build reads through.
pub(crate) const GROUP: &str = "agents";

/// Dead letters kept (oldest dropped first): a record, never a task.
pub(crate) const DEAD_LETTERS_KEPT: usize = 10_000;

/// The key prefix used unless another is configured.
pub const DEFAULT_PREFIX: &str = "multiproc";

/// Key names for one build under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub prefix: String,
    pub build: u64,
    pub tasks: String,
    pub agents: String,
    pub dead: String,
}

impl Keys {
    pub fn new(prefix: &str, build: u64) -> Self {
        Self {
            prefix: prefix.to_owned(),
            build,
            tasks: format!("{prefix}:{build:016x}:tasks"),
            agents: format!("{prefix}:{build:016x}:agents"),
            dead: format!("{prefix}:{build:016x}:dead"),
        }
    }

    /// The reply stream of caller `caller`.
    pub fn reply(&self, caller: &str) -> String {
        format!("{}:reply:{caller}", self.prefix)
    }
}

/// A random 64-bit id in hex (callers, agents): std's randomly keyed hasher
/// over the pid, the time and a counter.
pub(crate) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}
