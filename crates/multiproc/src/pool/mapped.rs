//! [`Mapped`]: what a `map` gives back. Every item has its own result, but
//! the values of the items that succeeded are stored back to back (a
//! `Vec<T>`) and the failed items aside, by index: a million `u64` squares
//! take 8 MB, where a `Vec<Result<u64, Error>>` took 40 MB of fresh pages
//! to fault in and fill (issue 13).

use std::fmt;

use crate::error::{Error, Result};

/// Every item's result of a [`map`](super::Pool::map) or
/// [`starmap`](super::Pool::starmap), in input order.
///
/// One failure does not hide the others: [`iter`](Self::iter) and
/// `into_iter` yield one `Result` per item, [`get`](Self::get) gives item
/// `i`'s, [`failures`](Self::failures) lists the failed items with their
/// errors. Python's `pool.map` (a list, or the first exception) is
/// [`into_vec`](Self::into_vec):
///
/// ```no_run
/// # #[multiproc::task] fn square(x: u64) -> u64 { x * x }
/// # async fn demo(pool: multiproc::Pool) -> multiproc::Result<()> {
/// let squares: Vec<u64> = pool.map(square, 0..10u64).await?.into_vec()?;
/// # Ok(()) }
/// ```
pub struct Mapped<T> {
    /// The values of the items that succeeded, in input order.
    values: Vec<T>,
    /// The items that failed: (index, error), by increasing index.
    failures: Vec<(usize, Error)>,
}

impl<T> Default for Mapped<T> {
    fn default() -> Self {
        Self { values: Vec::new(), failures: Vec::new() }
    }
}

impl<T> Mapped<T> {
    /// Room for `n` values. Plain pages: advising a large vector onto
    /// transparent huge pages made one map in three 2-4x slower on this VM
    /// (the kernel zeroing fresh huge pages took over half of such a run).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { values: Vec::with_capacity(n), failures: Vec::new() }
    }

    /// Appends the next item's result.
    pub(crate) fn push(&mut self, r: Result<T>) {
        match r {
            Ok(v) => self.values.push(v),
            Err(e) => self.fail_next(e),
        }
    }

    /// Appends the next item, failed.
    pub(crate) fn fail_next(&mut self, e: Error) {
        let i = self.len();
        self.failures.push((i, e));
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.values.len() + self.failures.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every item succeeded.
    pub fn all_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failed items: index and error, by increasing index.
    pub fn failures(&self) -> &[(usize, Error)] {
        &self.failures
    }

    /// Item `i`'s result; `None` past the end.
    pub fn get(&self, i: usize) -> Option<std::result::Result<&T, &Error>> {
        if i >= self.len() {
            return None;
        }
        match self.failures.binary_search_by_key(&i, |(at, _)| *at) {
            Ok(k) => Some(Err(&self.failures[k].1)),
            // `k` failed items come before `i`.
            Err(k) => self.values.get(i - k).map(Ok),
        }
    }

    /// Each item's result, in input order.
    pub fn iter(&self) -> MappedIter<'_, T> {
        MappedIter { values: self.values.iter(), failures: &self.failures, next: 0, len: self.len() }
    }

    /// Every value, or the first failed item's error (Python's `pool.map`
    /// raising its first exception).
    pub fn into_vec(self) -> Result<Vec<T>> {
        match self.failures.into_iter().next() {
            None => Ok(self.values),
            Some((_, e)) => Err(e),
        }
    }

    /// The values of the items that succeeded (in input order) and the
    /// failed items (index and error).
    pub fn into_parts(self) -> (Vec<T>, Vec<(usize, Error)>) {
        (self.values, self.failures)
    }
}

impl<T: fmt::Debug> fmt::Debug for Mapped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> FromIterator<Result<T>> for Mapped<T> {
    fn from_iter<I: IntoIterator<Item = Result<T>>>(iter: I) -> Self {
        let mut out = Self::default();
        out.extend(iter);
        out
    }
}

/// Appends items after the last one.
impl<T> Extend<Result<T>> for Mapped<T> {
    fn extend<I: IntoIterator<Item = Result<T>>>(&mut self, iter: I) {
        for r in iter {
            self.push(r);
        }
    }
}

/// Item results by reference, from [`Mapped::iter`].
#[derive(Debug)]
pub struct MappedIter<'a, T> {
    values: std::slice::Iter<'a, T>,
    failures: &'a [(usize, Error)],
    next: usize,
    len: usize,
}

impl<'a, T> Iterator for MappedIter<'a, T> {
    type Item = std::result::Result<&'a T, &'a Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match self.failures.split_first() {
            Some(((at, e), rest)) if *at == i => {
                self.failures = rest;
                Some(Err(e))
            }
            _ => self.values.next().map(Ok),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for MappedIter<'_, T> {}

/// Item results by value, from `Mapped::into_iter`.
#[derive(Debug)]
pub struct MappedIntoIter<T> {
    values: std::vec::IntoIter<T>,
    failures: std::iter::Peekable<std::vec::IntoIter<(usize, Error)>>,
    next: usize,
    len: usize,
}

impl<T> Iterator for MappedIntoIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.next == self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match self.failures.next_if(|(at, _)| *at == i) {
            Some((_, e)) => Some(Err(e)),
            None => self.values.next().map(Ok),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for MappedIntoIter<T> {}

impl<T> IntoIterator for Mapped<T> {
    type Item = Result<T>;
    type IntoIter = MappedIntoIter<T>;

    fn into_iter(self) -> MappedIntoIter<T> {
        let len = self.len();
        MappedIntoIter { values: self.values.into_iter(), failures: self.failures.into_iter().peekable(), next: 0, len }
    }
}

impl<'a, T> IntoIterator for &'a Mapped<T> {
    type Item = std::result::Result<&'a T, &'a Error>;
    type IntoIter = MappedIter<'a, T>;

    fn into_iter(self) -> MappedIter<'a, T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Mapped<u32> {
        [Err(Error::Timeout), Ok(1), Ok(2), Err(Error::PoolTerminated), Ok(4), Err(Error::Timeout)]
            .into_iter()
            .collect()
    }

    #[test]
    fn items_keep_their_places() {
        let m = sample();
        assert_eq!(m.len(), 6);
        assert!(!m.all_ok());
        let shape: Vec<Option<u32>> = m.iter().map(|r| r.ok().copied()).collect();
        assert_eq!(shape, [None, Some(1), Some(2), None, Some(4), None]);
        let by_get: Vec<Option<u32>> = (0..6).map(|i| m.get(i).unwrap().ok().copied()).collect();
        assert_eq!(by_get, shape);
        assert!(m.get(6).is_none());
        assert!(matches!(m.get(3), Some(Err(Error::PoolTerminated))));
        assert_eq!(m.failures().iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 3, 5]);
        let owned: Vec<Option<u32>> = m.into_iter().map(Result::ok).collect();
        assert_eq!(owned, shape);
    }

    #[test]
    fn into_vec_is_every_value_or_the_first_error() {
        assert!(matches!(sample().into_vec(), Err(Error::Timeout)));
        let ok: Mapped<u32> = (0..5).map(Ok).collect();
        assert!(ok.all_ok());
        assert_eq!(ok.into_vec().unwrap(), [0, 1, 2, 3, 4]);
        let empty = Mapped::<u32>::default();
        assert!(empty.is_empty() && empty.iter().next().is_none());
    }
}
