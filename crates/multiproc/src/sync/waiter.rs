//! One waiter thread per process sleeps for every async wait on a shared
//! futex word (a lock word, an event's set count, a queue's sequence word…)
//! and wakes the tasks whose word changed.
//!
//! An async wait registers (word, value it must still hold, deadline,
//! waker) and returns `Pending`; the thread sleeps in one `futex_waitv` on
//! up to 127 distinct (word, value) pairs plus a private control word that
//! registrations bump, and on waking scans the pairs: every task whose word
//! changed or whose deadline passed is woken. Any number of tasks waiting on
//! the same word cost one entry, so the thread count is one whatever the
//! number of waiters; past 127 distinct words the thread also wakes every
//! millisecond to look at the rest. Without `futex_waitv` (Linux < 5.16)
//! it sleeps on its control word and looks every millisecond.
//!
//! A wait is cancel-safe: dropping its future removes its registration and
//! leaves nothing held. The thread starts on the first async wait; a child
//! forked from this process does not inherit it (children come from the
//! forkserver, which never waits, or from `exec`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use multiproc_sys::futex::{self, WAIT_ANY_MAX, WaitAny};

/// A futex word to watch, kept mapped by whoever implements this.
pub(crate) trait Watch: Send + Sync + 'static {
    fn word(&self) -> &AtomicU32;
    /// The count of sleepers wakers look at before making the wake-up
    /// call, if the primitive keeps one; a registered wait counts in it.
    fn sleepers(&self) -> Option<&AtomicU32> {
        None
    }
}

/// Word `index` of a primitive's block, with its sleeper count word.
pub(crate) struct BlockWord {
    pub block: super::Block,
    pub index: usize,
    pub sleepers: Option<usize>,
}

impl Watch for BlockWord {
    fn word(&self) -> &AtomicU32 {
        self.block.word(self.index)
    }

    fn sleepers(&self) -> Option<&AtomicU32> {
        self.sleepers.map(|i| self.block.word(i))
    }
}

/// Word `index` of `block` as a [`Watch`].
pub(crate) fn block_word(block: &super::Block, index: usize, sleepers: Option<usize>) -> Arc<dyn Watch> {
    Arc::new(BlockWord { block: block.clone(), index, sleepers })
}

type Key = (usize, u32);

struct Entry {
    key: Key,
    deadline: Option<Instant>,
    waker: Option<Waker>,
    fired: bool,
}

struct Watched {
    src: Arc<dyn Watch>,
    expected: u32,
    ids: HashSet<u64>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<Key, Watched>,
    entries: HashMap<u64, Entry>,
    deadlines: BTreeSet<(Instant, u64)>,
    next: u64,
}

impl Inner {
    /// Marks `id` fired and takes its waker.
    fn fire(&mut self, id: u64, wake: &mut Vec<Waker>) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        e.fired = true;
        wake.extend(e.waker.take());
        let (key, deadline) = (e.key, e.deadline);
        self.unwatch(id, key, deadline);
    }

    fn unwatch(&mut self, id: u64, key: Key, deadline: Option<Instant>) {
        if let Some(w) = self.keys.get_mut(&key) {
            w.ids.remove(&id);
            if w.ids.is_empty() {
                self.keys.remove(&key);
            }
        }
        if let Some(d) = deadline {
            self.deadlines.remove(&(d, id));
        }
    }
}

struct Registry {
    inner: Mutex<Inner>,
    /// Bumped (and woken) on every registration, so the thread rebuilds
    /// its list.
    control: AtomicU32,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<&'static Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r: &'static Registry =
            Box::leak(Box::new(Registry { inner: Mutex::new(Inner::default()), control: AtomicU32::new(0) }));
        // Without its thread no async wait could end: failing to start one
        // is as fatal as failing to start a runtime.
        std::thread::Builder::new()
            .name("multiproc-waiter".into())
            .spawn(move || run(r))
            .expect("start the multiproc waiter thread");
        r
    })
}

fn run(r: &'static Registry) {
    let mut waitv = true;
    loop {
        let mut wake = Vec::new();
        let (watched, control, deadline) = {
            let mut g = r.lock();
            let control = r.control.load(Ordering::SeqCst);
            let changed: Vec<u64> = g
                .keys
                .values()
                .filter(|w| w.src.word().load(Ordering::SeqCst) != w.expected)
                .flat_map(|w| w.ids.iter().copied())
                .collect();
            for id in changed {
                g.fire(id, &mut wake);
            }
            let now = Instant::now();
            while let Some(&(d, id)) = g.deadlines.first() {
                if d > now {
                    break;
                }
                g.fire(id, &mut wake);
            }
            let watched: Vec<(Arc<dyn Watch>, u32)> =
                g.keys.values().take(WAIT_ANY_MAX - 1).map(|w| (w.src.clone(), w.expected)).collect();
            let mut deadline = g.deadlines.first().map(|&(d, _)| d);
            if g.keys.len() > watched.len() || !waitv {
                let poll = now + Duration::from_millis(1);
                deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
            }
            (watched, control, deadline)
        };
        wake.into_iter().for_each(Waker::wake);
        if waitv {
            let mut words: Vec<(&AtomicU32, u32)> = Vec::with_capacity(watched.len() + 1);
            words.push((&r.control, control));
            words.extend(watched.iter().map(|(s, e)| (s.word(), *e)));
            match futex::wait_any(&words, deadline) {
                Ok(WaitAny::Unsupported) => waitv = false,
                Ok(_) => {}
                // EFAULT or the like: look again after a pause rather than spin.
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        } else {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let _ = futex::wait(&r.control, control, left);
        }
    }
}

/// Waits until `src`'s word no longer holds `expected`, or `deadline`
/// (then the caller looks again: a change may be spurious).
pub(crate) struct WordWait {
    src: Arc<dyn Watch>,
    expected: u32,
    deadline: Option<Instant>,
    id: Option<u64>,
    counted: bool,
}

impl WordWait {
    pub fn new(src: Arc<dyn Watch>, expected: u32, deadline: Option<Instant>) -> Self {
        Self { src, expected, deadline, id: None, counted: false }
    }

    fn finish(&mut self) {
        if let Some(id) = self.id.take() {
            let mut g = registry().lock();
            if let Some(e) = g.entries.remove(&id) {
                g.unwatch(id, e.key, e.deadline);
            }
        }
        if std::mem::take(&mut self.counted)
            && let Some(s) = self.src.sleepers()
        {
            s.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Future for WordWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.counted {
            // Counted before the value is checked: a waker that changes the
            // word afterwards sees a sleeper and makes the wake-up call.
            if let Some(s) = this.src.sleepers() {
                s.fetch_add(1, Ordering::SeqCst);
            }
            this.counted = true;
        }
        if this.src.word().load(Ordering::SeqCst) != this.expected || this.deadline.is_some_and(|d| Instant::now() >= d)
        {
            this.finish();
            return Poll::Ready(());
        }
        let r = registry();
        let mut g = r.lock();
        match this.id {
            Some(id) => match g.entries.get_mut(&id) {
                Some(e) if !e.fired => {
                    if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        e.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                _ => {
                    drop(g);
                    this.finish();
                    Poll::Ready(())
                }
            },
            None => {
                let id = g.next;
                g.next += 1;
                let key = (this.src.word() as *const AtomicU32 as usize, this.expected);
                g.keys
                    .entry(key)
                    .or_insert_with(|| Watched { src: this.src.clone(), expected: this.expected, ids: HashSet::new() })
                    .ids
                    .insert(id);
                g.entries
                    .insert(id, Entry { key, deadline: this.deadline, waker: Some(cx.waker().clone()), fired: false });
                if let Some(d) = this.deadline {
                    g.deadlines.insert((d, id));
                }
                drop(g);
                this.id = Some(id);
                r.control.fetch_add(1, Ordering::SeqCst);
                futex::wake(&r.control, 1);
                Poll::Pending
            }
        }
    }
}

impl Drop for WordWait {
    fn drop(&mut self) {
        self.finish();
    }
}
