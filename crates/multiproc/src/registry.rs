//! The task registry: every `#[multiproc::task]` function and
//! `#[multiproc::target]` type, found by the caller from the item's type and by
//! the worker from its name.

use std::any::TypeId;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::wire::{Failure, TaskRef};

/// A task's encoded result, or why it has none.
pub type Outcome = std::result::Result<Vec<u8>, Failure>;

/// Whether a task's encoded result was appended to the caller's buffer, or
/// why it has none (the buffer may then hold part of it: cut it back).
pub type Written = std::result::Result<(), Failure>;

/// A boxed, non-`Send` future (async tasks run on the worker's own thread).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How to call a registered item from msgpack arguments.
#[derive(Debug, Clone, Copy)]
pub enum Invoke {
    /// Decodes its arguments, runs the body and appends the encoded result
    /// to the buffer (a pool worker's reply: no allocation per item).
    Sync(fn(&[u8], &mut Vec<u8>) -> Written),
    /// Decodes its arguments at once and returns the future that runs the body.
    Async(fn(&[u8]) -> BoxFuture<'static, Outcome>),
}

/// One registered task or target; built by the macros, never by hand.
#[derive(Debug)]
pub struct TaskEntry {
    /// The registered name: module path and ident.
    pub name: &'static str,
    /// The `TypeId` of the function item (or `Target` type): how the caller
    /// finds the entry from the value it was given.
    pub key: fn() -> TypeId,
    /// The Rust signature, compared by the worker with the caller's.
    pub signature: fn() -> &'static str,
    /// How the worker calls it.
    pub invoke: Invoke,
}

impl TaskEntry {
    pub(crate) fn task_ref(&self) -> TaskRef {
        TaskRef { name: self.name.to_owned(), signature: (self.signature)().to_owned() }
    }
}

/// Every entry the macros registered in this binary: the link-time slice
/// `multiproc_sys::link::TASKS`, whose elements are `TaskEntry`s.
pub fn tasks() -> impl Iterator<Item = &'static TaskEntry> {
    multiproc_sys::link::TASKS.iter().filter_map(|r| r.entry.downcast_ref::<TaskEntry>())
}

struct Index {
    by_key: HashMap<TypeId, &'static TaskEntry>,
    by_name: HashMap<&'static str, Result<&'static TaskEntry, ()>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in tasks() {
            by_key.insert((entry.key)(), entry);
            by_name.entry(entry.name).and_modify(|e| *e = Err(())).or_insert(Ok(entry));
        }
        Index { by_key, by_name }
    })
}

/// Builds the index now: the forkserver does, so every child it forks finds
/// it built (read-only, shared with the forkserver) instead of building its
/// own at its first call.
pub(crate) fn warm() {
    let _ = index();
}

/// What a spare child runs before it knows its task (`tree/child.rs`): the
/// lookup [`resolve`] does, for every registered name and signature, so
/// the pages holding them are mapped here and not on a start's path (a
/// forked child maps each page of the binary's read-only data at its
/// first touch).
pub(crate) fn rehearse_lookups() {
    use std::hint::black_box;
    let by_name = &index().by_name;
    for (name, entry) in by_name {
        if let Ok(entry) = entry {
            let signature = (entry.signature)();
            black_box(by_name.get(black_box(*name)).is_some() && black_box(signature) == signature);
        }
    }
}

/// The entry registered for the item of type `F`.
pub(crate) fn lookup<F: 'static>() -> Result<&'static TaskEntry> {
    index().by_key.get(&TypeId::of::<F>()).copied().ok_or(Error::UnregisteredTask { name: std::any::type_name::<F>() })
}

/// The worker's entry for a task named by the parent; refuses a different
/// signature.
pub(crate) fn resolve(task: &TaskRef) -> std::result::Result<&'static TaskEntry, String> {
    match index().by_name.get(task.name.as_str()) {
        None => Err(format!("no task named `{}` is registered in this binary", task.name)),
        Some(Err(())) => Err(format!("two tasks are registered as `{}`; rename one", task.name)),
        Some(Ok(entry)) if (entry.signature)() != task.signature => Err(format!(
            "task `{}` has signature `{}` here but `{}` in the parent",
            task.name,
            (entry.signature)(),
            task.signature
        )),
        Some(Ok(entry)) => Ok(entry),
    }
}

/// Implemented by every function a pool or process can run: `fn` items (and,
/// through the `Async` marker, `async fn` items) whose arguments form the
/// tuple `Args`. You never name it: `Marker` only tells the kinds of task
/// apart during inference.
///
/// What the caller receives, [`Output`](Self::Output), depends on what the
/// task returns:
///
/// | the task returns | the caller gets | marker |
/// | --- | --- | --- |
/// | `R: Serialize + DeserializeOwned` (including `Result<T, E>` with a serde `E`) | `Ok(R)`, the exact value | [`Plain`] / [`Async`] |
/// | `Result<T, E>` with `E: std::error::Error` | `Ok(T)`, or `Err(Error::TaskFailed(_))` | [`ErrorResult`] |
/// | `Result<T, Box<dyn Error + Send + Sync>>` (or anything that derefs to `dyn Error`, such as `anyhow::Error`) | `Ok(T)`, or `Err(Error::TaskFailed(_))` | [`BoxedErrorResult`] |
///
/// An error type that is both `std::error::Error` and
/// `Serialize + DeserializeOwned` fits two rows: the call does not compile
/// ("type annotations needed"). Pick one: drop the serde derives to get
/// `TaskFailed`, or return `Result<T, String>` (or a serde-only error type)
/// for the exact round trip.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run in a worker process with these arguments",
    label = "not a task for the arguments `{Args}`",
    note = "a task is a `fn` or `async fn` with #[multiproc::task]; its arguments must be `Deserialize` and owned; \
            it returns a `Serialize + Deserialize` value, or `Result<T, E>` with `E: std::error::Error` \
            (see the `multiproc::guide::tasks` page)"
)]
pub trait TaskFn<Args, Marker>: Copy + Send + Sync + 'static {
    /// What the caller receives: the function's return value (for an
    /// `async fn`, what its future resolves to); for a task returning
    /// `Result<T, E>` with a non-serde error, `T`.
    type Output: DeserializeOwned + Send + 'static;
}

/// Marker for plain `fn` tasks (see [`TaskFn`]).
#[derive(Debug)]
pub enum Plain {}
/// Marker for `async fn` tasks.
#[derive(Debug)]
pub enum Async {}
/// Marker for tasks returning `Result<T, E>` with `E: std::error::Error`
/// ([`Plain`] or [`Async`] inside): the error arrives as
/// [`Error::TaskFailed`].
#[derive(Debug)]
pub struct ErrorResult<M>(PhantomData<M>, std::convert::Infallible);
/// Marker for tasks returning `Result<T, E>` where `E` derefs to
/// `dyn std::error::Error` (`Box<dyn Error + Send + Sync>`, `anyhow::Error`):
/// the error arrives as [`Error::TaskFailed`].
#[derive(Debug)]
pub struct BoxedErrorResult<M>(PhantomData<M>, std::convert::Infallible);

/// The error types a task can return through the `std::error::Error`
/// path when boxed: `dyn Error` with or without `Send`/`Sync`.
pub trait DynError {
    /// `self` as a plain `dyn Error`.
    fn as_dyn_error(&self) -> &(dyn StdError + 'static);
}

impl DynError for dyn StdError + 'static {
    fn as_dyn_error(&self) -> &(dyn StdError + 'static) {
        self
    }
}

impl DynError for dyn StdError + Send + 'static {
    fn as_dyn_error(&self) -> &(dyn StdError + 'static) {
        self
    }
}

impl DynError for dyn StdError + Send + Sync + 'static {
    fn as_dyn_error(&self) -> &(dyn StdError + 'static) {
        self
    }
}

macro_rules! impl_task_fn {
    ($($arg:ident),*) => {
        impl<F, R, $($arg,)*> TaskFn<($($arg,)*), Plain> for F
        where
            F: Fn($($arg),*) -> R + Copy + Send + Sync + 'static,
            R: Serialize + DeserializeOwned + Send + 'static,
        {
            type Output = R;
        }

        impl<F, Fut, $($arg,)*> TaskFn<($($arg,)*), Async> for F
        where
            F: Fn($($arg),*) -> Fut + Copy + Send + Sync + 'static,
            Fut: Future,
            Fut::Output: Serialize + DeserializeOwned + Send + 'static,
        {
            type Output = Fut::Output;
        }

        impl<F, Ok0, Err0, $($arg,)*> TaskFn<($($arg,)*), ErrorResult<Plain>> for F
        where
            F: Fn($($arg),*) -> std::result::Result<Ok0, Err0> + Copy + Send + Sync + 'static,
            Ok0: Serialize + DeserializeOwned + Send + 'static,
            Err0: StdError,
        {
            type Output = Ok0;
        }

        impl<F, Fut, Ok0, Err0, $($arg,)*> TaskFn<($($arg,)*), ErrorResult<Async>> for F
        where
            F: Fn($($arg),*) -> Fut + Copy + Send + Sync + 'static,
            Fut: Future<Output = std::result::Result<Ok0, Err0>>,
            Ok0: Serialize + DeserializeOwned + Send + 'static,
            Err0: StdError,
        {
            type Output = Ok0;
        }

        impl<F, Ok0, Err0, $($arg,)*> TaskFn<($($arg,)*), BoxedErrorResult<Plain>> for F
        where
            F: Fn($($arg),*) -> std::result::Result<Ok0, Err0> + Copy + Send + Sync + 'static,
            Ok0: Serialize + DeserializeOwned + Send + 'static,
            Err0: Deref,
            Err0::Target: DynError,
        {
            type Output = Ok0;
        }

        impl<F, Fut, Ok0, Err0, $($arg,)*> TaskFn<($($arg,)*), BoxedErrorResult<Async>> for F
        where
            F: Fn($($arg),*) -> Fut + Copy + Send + Sync + 'static,
            Fut: Future<Output = std::result::Result<Ok0, Err0>>,
            Ok0: Serialize + DeserializeOwned + Send + 'static,
            Err0: Deref,
            Err0::Target: DynError,
        {
            type Output = Ok0;
        }
    };
}

impl_task_fn!();
impl_task_fn!(A);
impl_task_fn!(A, B);
impl_task_fn!(A, B, C);
impl_task_fn!(A, B, C, D);
impl_task_fn!(A, B, C, D, E);
impl_task_fn!(A, B, C, D, E, G);
impl_task_fn!(A, B, C, D, E, G, H);
impl_task_fn!(A, B, C, D, E, G, H, I);

/// The twin of a Python `Process` subclass that overrides `run`: a
/// serializable value whose `run` executes in the child. Register the impl
/// with `#[multiproc::target]`.
///
/// ```no_run
/// // class Worker(Process):
/// //     def __init__(self, n): super().__init__(); self.n = n
/// //     def run(self): print("working on", self.n)
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Worker {
///     n: u32,
/// }
///
/// #[multiproc::target]
/// impl multiproc::Target for Worker {
///     fn run(self) {
///         println!("working on {}", self.n);
///     }
/// }
///
/// # async fn demo() -> multiproc::Result<()> {
/// let mut p = multiproc::Process::from_target(Worker { n: 7 });
/// p.start().await?;
/// assert_eq!(p.join().await?, 0);
/// # Ok(()) }
/// ```
pub trait Target: Serialize + DeserializeOwned + Send + 'static {
    /// The body of the child process (Python's `Process.run`).
    fn run(self);
}

/// Used by the macros: decodes a task's argument tuple.
pub fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, Failure> {
    rmp_serde::from_slice(bytes).map_err(|e| Failure::Decode(format!("the task's arguments: {e}")))
}

/// Used by the macros: appends a task's encoded result to `out`.
pub fn encode_result<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Written {
    rmp_serde::encode::write(out, value).map_err(|e| Failure::Encode(format!("the task's result: {e}")))
}

/// Used by the macros (async tasks): a task's encoded result on its own.
pub fn encode_owned(output: impl FnOnce(&mut Vec<u8>) -> Written) -> Outcome {
    let mut out = Vec::new();
    output(&mut out).map(|()| out)
}

/// Used by the macros: where a task is defined (its registered name and
/// source location), for the errors it returns.
#[derive(Debug, Clone, Copy)]
pub struct TaskSite {
    /// The registered name (module path and ident).
    pub name: &'static str,
    /// `file:line:column` of the task's name.
    pub location: &'static str,
}

/// Used by the macros: a task's return value on its way to the encoder
/// that fits its type (see [`EncodeOutput`]).
#[derive(Debug)]
pub struct Encode<'a, R>(pub &'a R);

/// Used by the macros, through autoref specialisation: the impl for
/// `&&Encode<R>` (a serde value, kept exactly) wins over the one for
/// `&Encode<Result<T, E>>` (`E: std::error::Error`), which wins over the one
/// for `Encode<Result<T, E>>` (`E` derefs to `dyn Error`). The caller's
/// [`TaskFn`] markers make the same choice, so both ends agree.
pub trait EncodeOutput {
    /// Appends the encoded result to `out`, or turns its error into a
    /// [`Failure`].
    fn encode(&self, site: &TaskSite, out: &mut Vec<u8>) -> Written;
}

impl<R: Serialize + DeserializeOwned> EncodeOutput for &&Encode<'_, R> {
    fn encode(&self, _site: &TaskSite, out: &mut Vec<u8>) -> Written {
        encode_result(self.0, out)
    }
}

impl<T: Serialize, E: StdError> EncodeOutput for &Encode<'_, std::result::Result<T, E>> {
    fn encode(&self, site: &TaskSite, out: &mut Vec<u8>) -> Written {
        match self.0 {
            Ok(value) => encode_result(value, out),
            Err(e) => Err(returned(site, e)),
        }
    }
}

impl<T: Serialize, E> EncodeOutput for Encode<'_, std::result::Result<T, E>>
where
    E: Deref,
    E::Target: DynError,
{
    fn encode(&self, site: &TaskSite, out: &mut Vec<u8>) -> Written {
        match self.0 {
            Ok(value) => encode_result(value, out),
            Err(e) => Err(returned(site, (**e).as_dyn_error())),
        }
    }
}

/// At most this many causes travel with a returned error (a cycle in a
/// `source()` chain must not loop forever).
const MAX_SOURCES: usize = 32;

/// A task's returned error, with its chain of causes, for the caller.
fn returned(site: &TaskSite, e: &dyn StdError) -> Failure {
    let mut sources = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        if sources.len() == MAX_SOURCES {
            break;
        }
        sources.push(cause.to_string());
        next = cause.source();
    }
    Failure::Returned {
        task: site.name.to_owned(),
        message: e.to_string(),
        sources,
        location: site.location.to_owned(),
    }
}

/// Used by the macros: the `TypeId` of a function item.
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}
