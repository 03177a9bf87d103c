//! `multiproc`'s `Pool` across machines, on Redis Streams.
//!
//! # Theory of operation
//!
//! A caller ([`ClusterPool`]) cuts each call into chunks and appends each
//! chunk to its build's task stream (`XADD`), keeping at most `window`
//! chunks there at once. Agents ([`Worker`]) of the same build read the
//! stream through one consumer group (`XREADGROUP`), run each chunk on a
//! local [`multiproc::Pool`], and in one transaction append the results to
//! the caller's reply stream and acknowledge and delete the entry. The
//! caller follows its reply stream and routes each reply to its handle by
//! chunk id; a reply for a chunk already answered is dropped.
//!
//! Consumer groups give the pool's crash semantics across hosts: an entry
//! an agent read but did not acknowledge stays pending under its name; the
//! agent renews that lease while it lives; when it dies, another agent
//! claims the entry after the lease (`XAUTOCLAIM`) and runs it again.
//! Execution is at least once, delivery of each result exactly once. A
//! chunk that kills its worker is handed back until `max_deliveries`, then
//! dead-lettered: its caller gets [`multiproc::Error::TaskPoisoned`].
//!
//! Only data crosses: a task is named by its registered name and signature
//! fingerprint, its arguments and results are msgpack. Every entry carries
//! the caller's build id, and each build has its own stream, so an agent of
//! another build never takes a task it would run differently.
//!
//! ```no_run
//! #[multiproc::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # async fn demo() -> multiproc::Result<()> {
//! // On every host:  multiproc_cluster::Worker::new(url).processes(4).run().await?;
//! let url = "redis://127.0.0.1/";
//! let pool = multiproc_cluster::ClusterPool::connect(url).await?;
//! let squares = pool.map(square, 0..100u64).chunksize(10).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod conn;
mod dispatch;
mod imap;
mod keys;
mod pool;
mod result;
mod wire;

pub use agent::Worker;
pub use imap::Imap;
pub use keys::DEFAULT_PREFIX;
pub use pool::{ClusterPool, ClusterPoolBuilder, ClusterStats};
pub use result::{AsyncResult, MapCall, MapResult};
