//! `Value`, `Array` and `SharedString`: plain numbers (and text) in shared
//! memory, each guarded by a [`Lock`] unless made raw (Python's
//! `lock=False`). Every element is read and written with one atomic access,
//! so a read never sees a torn value; read-modify-write sequences need the
//! lock (or [`Value::update`]), exactly as in Python.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sync::{Block, Lock};

mod sealed {
    pub trait Sealed {}
}

/// The element types of [`Value`] and [`Array`]: Python's typecodes `b B h H
/// i I q Q f d` and `bool`.
pub trait Primitive: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Bytes per element (1, 2, 4 or 8).
    const SIZE: usize;
    /// The value's bits, zero-extended to a `u64` (how it is stored).
    fn to_bits(self) -> u64;
    /// The value stored as `bits` (the low [`SIZE`](Self::SIZE) bytes).
    fn from_bits(bits: u64) -> Self;
}

macro_rules! primitive {
    ($($t:ty => $size:expr, |$v:ident| $to:expr, |$b:ident| $from:expr;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Primitive for $t {
            const SIZE: usize = $size;
            fn to_bits(self) -> u64 {
                let $v = self;
                $to
            }
            fn from_bits($b: u64) -> Self {
                $from
            }
        }
    )*};
}

primitive! {
    i8 => 1, |v| v as u8 as u64, |b| b as u8 as i8;
    u8 => 1, |v| v as u64, |b| b as u8;
    i16 => 2, |v| v as u16 as u64, |b| b as u16 as i16;
    u16 => 2, |v| v as u64, |b| b as u16;
    i32 => 4, |v| v as u32 as u64, |b| b as u32 as i32;
    u32 => 4, |v| v as u64, |b| b as u32;
    i64 => 8, |v| v as u64, |b| b as i64;
    u64 => 8, |v| v, |b| b;
    f32 => 4, |v| v.to_bits() as u64, |b| f32::from_bits(b as u32);
    f64 => 8, |v| v.to_bits(), |b| f64::from_bits(b);
    bool => 1, |v| v as u64, |b| b != 0;
}

/// Element `i` of a block of `T`s, loaded atomically.
fn load<T: Primitive>(block: &Block, i: usize) -> T {
    let region = block.region();
    let at = i * T::SIZE;
    let bits = match T::SIZE {
        1 => region.atomic_u8(at).map(|a| a.load(Ordering::Acquire) as u64),
        2 => region.atomic_u16(at).map(|a| a.load(Ordering::Acquire) as u64),
        4 => region.atomic_u32(at).map(|a| a.load(Ordering::Acquire) as u64),
        _ => region.atomic_u64(at).map(|a| a.load(Ordering::Acquire)),
    };
    T::from_bits(bits.expect("index checked against the length"))
}

fn store<T: Primitive>(block: &Block, i: usize, value: T) {
    let region = block.region();
    let at = i * T::SIZE;
    let bits = value.to_bits();
    let stored = match T::SIZE {
        1 => region.atomic_u8(at).map(|a| a.store(bits as u8, Ordering::Release)),
        2 => region.atomic_u16(at).map(|a| a.store(bits as u16, Ordering::Release)),
        4 => region.atomic_u32(at).map(|a| a.store(bits as u32, Ordering::Release)),
        _ => region.atomic_u64(at).map(|a| a.store(bits, Ordering::Release)),
    };
    stored.expect("index checked against the length")
}

fn lock_of(lock: &Option<Lock>) -> Result<&Lock> {
    lock.as_ref().ok_or_else(|| Error::InvalidArgument("this shared value was created without a lock".into()))
}

/// One number in shared memory: `multiprocessing.Value(typecode, v)`.
///
/// ```no_run
/// # async fn demo() -> multiproc::Result<()> {
/// let v = multiproc::Value::new(0i32)?;       // v = Value('i', 0)
/// {
///     let _g = v.get_lock()?.acquire().await?; // with v.get_lock():
///     v.set(v.get() + 1);                      //     v.value += 1
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Primitive> {
    block: Block,
    lock: Option<Lock>,
    _t: PhantomData<T>,
}

impl<T: Primitive> Value<T> {
    /// A value with its own lock (`Value(typecode, v)`).
    pub fn new(value: T) -> Result<Self> {
        Self::build(value, Some(Lock::new()?))
    }

    /// A value without a lock (`Value(typecode, v, lock=False)`).
    pub fn new_raw(value: T) -> Result<Self> {
        Self::build(value, None)
    }

    fn build(value: T, lock: Option<Lock>) -> Result<Self> {
        let v = Self { block: Block::new(c"multiproc-value", 8)?, lock, _t: PhantomData };
        v.set(value);
        Ok(v)
    }

    /// `v.value`
    pub fn get(&self) -> T {
        load(&self.block, 0)
    }

    /// `v.value = x`
    pub fn set(&self, value: T) {
        store(&self.block, 0, value)
    }

    /// `v.get_lock()`; an error for a raw value.
    pub fn get_lock(&self) -> Result<&Lock> {
        lock_of(&self.lock)
    }

    /// `with v.get_lock(): v.value = f(v.value)` from sync code; returns the
    /// new value.
    pub fn blocking_update(&self, f: impl FnOnce(T) -> T) -> Result<T> {
        let _g = self.get_lock()?.blocking_acquire()?;
        let new = f(self.get());
        self.set(new);
        Ok(new)
    }

    /// `with v.get_lock(): v.value = f(v.value)`; returns the new value.
    pub async fn update(&self, f: impl FnOnce(T) -> T) -> Result<T> {
        let _g = self.get_lock()?.acquire().await?;
        let new = f(self.get());
        self.set(new);
        Ok(new)
    }
}

/// A fixed-length array of numbers in shared memory, zeroed at creation
/// unless filled: `multiprocessing.Array(typecode, size_or_values)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "", try_from = "ArrayWire<T>")]
pub struct Array<T: Primitive> {
    block: Block,
    len: usize,
    lock: Option<Lock>,
    _t: PhantomData<T>,
}

/// An [`Array`] as received, checked against its mapping before use.
#[derive(Deserialize)]
#[serde(bound = "")]
struct ArrayWire<T: Primitive> {
    block: Block,
    len: usize,
    lock: Option<Lock>,
    _t: PhantomData<T>,
}

impl<T: Primitive> TryFrom<ArrayWire<T>> for Array<T> {
    type Error = String;

    fn try_from(w: ArrayWire<T>) -> std::result::Result<Self, String> {
        if w.len.checked_mul(T::SIZE).is_none_or(|bytes| bytes > w.block.region().len()) {
            return Err(format!(
                "an array of {} elements does not fit its {}-byte mapping",
                w.len,
                w.block.region().len()
            ));
        }
        Ok(Self { block: w.block, len: w.len, lock: w.lock, _t: PhantomData })
    }
}

impl<T: Primitive> Array<T> {
    /// `Array(typecode, n)`: `n` zeros, with a lock.
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::build(len, Some(Lock::new()?))
    }

    /// `Array(typecode, values)`, with a lock.
    pub fn from_slice(values: &[T]) -> Result<Self> {
        let a = Self::zeroed(values.len())?;
        for (i, v) in values.iter().enumerate() {
            store(&a.block, i, *v);
        }
        Ok(a)
    }

    /// `Array(typecode, n, lock=False)`
    pub fn zeroed_raw(len: usize) -> Result<Self> {
        Self::build(len, None)
    }

    fn build(len: usize, lock: Option<Lock>) -> Result<Self> {
        // One spare element keeps the mapping non-empty for `len == 0`.
        let bytes = len.checked_add(1).and_then(|n| n.checked_mul(T::SIZE)).ok_or_else(|| {
            Error::InvalidArgument(format!("an array of {len} elements is larger than the address space"))
        })?;
        let block = Block::new(c"multiproc-array", bytes)?;
        Ok(Self { block, len, lock, _t: PhantomData })
    }

    /// The number of elements (`len(arr)`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, i: usize) -> Result<()> {
        if i < self.len {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!("array index {i} out of range for length {}", self.len)))
        }
    }

    /// `a[i]`
    pub fn get(&self, i: usize) -> Result<T> {
        self.check(i)?;
        Ok(load(&self.block, i))
    }

    /// `a[i] = v`
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.check(i)?;
        store(&self.block, i, value);
        Ok(())
    }

    /// `a[:]`: a copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| load(&self.block, i)).collect()
    }

    /// `a.get_lock()`; an error for a raw array.
    pub fn get_lock(&self) -> Result<&Lock> {
        lock_of(&self.lock)
    }
}

/// Text of bounded length in shared memory: the twin of Python's
/// `Value(c_char_p, b"...")` (which only works because `fork` copies the
/// pointer's target; this one really is shared). Reads and writes take its
/// lock, so a reader never sees half of a write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "SharedStringWire")]
pub struct SharedString {
    /// The length (a u32 element), then the bytes.
    block: Block,
    capacity: usize,
    lock: Lock,
}

/// A [`SharedString`] as received, checked against its mapping before use.
#[derive(Deserialize)]
struct SharedStringWire {
    block: Block,
    capacity: usize,
    lock: Lock,
}

impl TryFrom<SharedStringWire> for SharedString {
    type Error = String;

    fn try_from(w: SharedStringWire) -> std::result::Result<Self, String> {
        if w.capacity.checked_add(4).is_none_or(|bytes| bytes > w.block.region().len()) {
            return Err(format!(
                "a string of capacity {} does not fit its {}-byte mapping",
                w.capacity,
                w.block.region().len()
            ));
        }
        Ok(Self { block: w.block, capacity: w.capacity, lock: w.lock })
    }
}

impl SharedString {
    /// Room for `capacity` bytes, holding `initial`.
    pub fn new(capacity: usize, initial: &str) -> Result<Self> {
        let s = Self { block: Block::new(c"multiproc-string", 4 + capacity.max(1))?, capacity, lock: Lock::new()? };
        s.blocking_set(initial)?;
        Ok(s)
    }

    /// The most bytes the string can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn read(&self) -> String {
        let len = (load::<u32>(&self.block, 0) as usize).min(self.capacity);
        let bytes: Vec<u8> = (0..len).map(|i| load::<u8>(&self.block, 4 + i)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn write(&self, text: &str) -> Result<()> {
        if text.len() > self.capacity {
            return Err(Error::InvalidArgument(format!(
                "{} bytes do not fit a shared string of capacity {}",
                text.len(),
                self.capacity
            )));
        }
        for (i, b) in text.bytes().enumerate() {
            store(&self.block, 4 + i, b);
        }
        store(&self.block, 0, text.len() as u32);
        Ok(())
    }

    /// `s.value` from sync code.
    pub fn blocking_get(&self) -> Result<String> {
        let _g = self.lock.blocking_acquire()?;
        Ok(self.read())
    }

    /// `s.value = text` from sync code; longer than the capacity is an error.
    pub fn blocking_set(&self, text: &str) -> Result<()> {
        let _g = self.lock.blocking_acquire()?;
        self.write(text)
    }

    /// `s.value`
    pub async fn get(&self) -> Result<String> {
        let _g = self.lock.acquire().await?;
        Ok(self.read())
    }

    /// `s.value = text`; longer than the capacity is an error.
    pub async fn set(&self, text: &str) -> Result<()> {
        let _g = self.lock.acquire().await?;
        self.write(text)
    }
}
