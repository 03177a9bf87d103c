//! A Redis connection that survives the server going away: each request is
//! retried across dropped connections, refusals and restarts (`LOADING`)
//! until the reconnect deadline, then fails as `Error::ClusterUnavailable`.
//! Errors the server means (a wrong type, `NOGROUP`) are returned at once.

use std::time::Duration;

use multiproc::Error;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, RetryMethod};
use tokio::time::Instant;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Opens a client for `url` (`redis://`, `rediss://` with the `tls`
/// feature, `redis+unix://`, with `user:password@` for ACL users).
pub(crate) fn client(url: &str) -> multiproc::Result<Client> {
    #[cfg(feature = "tls")]
    {
        // rustls needs a process-wide crypto provider; keep one the
        // application installed, else install ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(Error::InvalidArgument(format!(
            "the Redis URL {}: TLS needs multiproc-cluster's `tls` feature",
            redact(url)
        )));
    }
    Client::open(url).map_err(|e| Error::InvalidArgument(format!("the Redis URL {}: {e}", redact(url))))
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Why a request failed for good.
#[derive(Debug)]
pub(crate) enum QueryError {
    /// No answer until the deadline.
    Unreachable(String),
    /// The server answered with an error.
    Server(RedisError),
}

impl QueryError {
    /// The server's error code (`NOGROUP`, `BUSYGROUP`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server(e) => e.code(),
            Self::Unreachable(_) => None,
        }
    }
}

impl From<QueryError> for Error {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unreachable(why) => Error::ClusterUnavailable(why),
            QueryError::Server(e) => Error::ClusterUnavailable(format!("the server refused a request: {e}")),
        }
    }
}

/// A request: one command or a pipeline (atomic or not).
#[derive(Clone, Copy)]
pub(crate) enum Req<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

impl<'a> From<&'a redis::Cmd> for Req<'a> {
    fn from(c: &'a redis::Cmd) -> Self {
        Self::Cmd(c)
    }
}

impl<'a> From<&'a redis::Pipeline> for Req<'a> {
    fn from(p: &'a redis::Pipeline) -> Self {
        Self::Pipe(p)
    }
}

/// One (re)connecting connection.
pub(crate) struct Conn {
    client: Client,
    conn: Option<MultiplexedConnection>,
    /// How long to keep retrying once requests start failing.
    pub deadline: Duration,
    response_timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("connected", &self.conn.is_some()).field("deadline", &self.deadline).finish()
    }
}

impl Conn {
    /// Connects now; [`Error::ClusterUnavailable`] when Redis does not
    /// answer a `PING` within `deadline`.
    pub async fn open(client: Client, deadline: Duration, response_timeout: Duration) -> multiproc::Result<Self> {
        let mut conn = Self { client, conn: None, deadline, response_timeout };
        conn.query::<String>(&redis::cmd("PING")).await?;
        Ok(conn)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.response_timeout.min(self.deadline))
            .set_response_timeout(self.response_timeout);
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// Sends `req`, retrying transient failures until the deadline.
    pub async fn query<T: FromRedisValue>(&mut self, req: impl Into<Req<'_>>) -> Result<T, QueryError> {
        let req = req.into();
        let give_up = Instant::now() + self.deadline;
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt = match &mut self.conn {
                Some(c) => match req {
                    Req::Cmd(cmd) => cmd.query_async::<T>(c).await,
                    Req::Pipe(p) => p.query_async::<T>(c).await,
                },
                None => match self.connect().await {
                    Ok(c) => {
                        self.conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            let e = match attempt {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !transient(&e) {
                return Err(QueryError::Server(e));
            }
            self.conn = None;
            let now = Instant::now();
            if now >= give_up {
                return Err(QueryError::Unreachable(format!("no answer for {:.1?} ({e})", self.deadline)));
            }
            tracing::debug!(error = %e, "Redis request failed; reconnecting");
            tokio::time::sleep(backoff.min(give_up - now)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Redis's own clock in milliseconds: every host measures heartbeats
    /// against it, so their clocks need not agree.
    pub async fn server_time_ms(&mut self) -> Result<u64, QueryError> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }
}

/// Whether a failure is the connection's (retry) rather than the request's.
fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || !matches!(e.retry_method(), RetryMethod::NoRetry)
}
