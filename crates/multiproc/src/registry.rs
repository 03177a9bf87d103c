//! The task registry: every `#[multiproc::task]` function and
//! `#[multiproc::target]` type, found by the caller from the item's type and by
//! the worker from its name.

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::wire::{Failure, TaskRef};

/// A task's encoded result, or why it has none.
pub type Outcome = std::result::Result<Vec<u8>, Failure>;

/// A boxed, non-`Send` future (async tasks run on the worker's own thread).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How to call a registered item from msgpack arguments.
#[derive(Debug, Clone, Copy)]
pub enum Invoke {
    Sync(fn(&[u8]) -> Outcome),
    /// Decodes its arguments at once and returns the future that runs the body.
    Async(fn(&[u8]) -> BoxFuture<'static, Outcome>),
}

/// One registered task or target; built by the macros, never by hand.
#[derive(Debug)]
pub struct TaskEntry {
    pub name: &'static str,
    pub key: fn() -> TypeId,
    pub signature: fn() -> &'static str,
    pub invoke: Invoke,
}

impl TaskEntry {
    pub(crate) fn task_ref(&self) -> TaskRef {
        TaskRef { name: self.name.to_owned(), signature: (self.signature)().to_owned() }
    }
}

#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

struct Index {
    by_key: HashMap<TypeId, &'static TaskEntry>,
    by_name: HashMap<&'static str, Result<&'static TaskEntry, ()>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in TASKS.iter() {
            by_key.insert((entry.key)(), entry);
            by_name.entry(entry.name).and_modify(|e| *e = Err(())).or_insert(Ok(entry));
        }
        Index { by_key, by_name }
    })
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
/// tuple `Args`. `Marker` only tells the two apart during inference.
pub trait TaskFn<Args, Marker>: Copy + Send + Sync + 'static {
    /// What the caller receives: the function's return value (for an
    /// `async fn`, what its future resolves to).
    type Output: DeserializeOwned + Send + 'static;
}

/// Marker for plain `fn` tasks (see [`TaskFn`]).
#[derive(Debug)]
pub enum Plain {}
/// Marker for `async fn` tasks.
#[derive(Debug)]
pub enum Async {}

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
pub trait Target: Serialize + DeserializeOwned + Send + 'static {
    fn run(self);
}

/// Used by the macros: decodes a task's argument tuple.
pub fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, Failure> {
    rmp_serde::from_slice(bytes).map_err(|e| Failure::Decode(format!("the task's arguments: {e}")))
}

/// Used by the macros: encodes a task's result.
pub fn encode_result<T: Serialize>(value: &T) -> Outcome {
    rmp_serde::to_vec(value).map_err(|e| Failure::Encode(format!("the task's result: {e}")))
}

/// Used by the macros: the `TypeId` of a function item.
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}
