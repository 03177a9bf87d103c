//! Transparent huge pages for one large buffer (issue 13): a pool's `map`
//! fills a results vector of hundreds of megabytes once; with 4 KiB pages
//! every page is a fault of its own (tens of thousands of them, each
//! charged to the cgroup), with 2 MiB pages a few dozen. Advice only: where
//! the kernel runs THP in `madvise` mode it takes it, elsewhere nothing
//! changes.

/// Buffers smaller than this are left alone (a few huge pages at most).
pub const MIN_LEN: usize = 4 << 20;

/// Asks the kernel to back the whole 2 MiB regions of `buf`'s memory with
/// huge pages as they are first touched. Best effort: errors are ignored,
/// and nothing about the buffer's contents or validity changes.
pub fn advise<T>(buf: &[T]) {
    advise_range(buf.as_ptr() as usize, std::mem::size_of_val(buf));
}

/// [`advise`] for the spare capacity of a vector (the part not written yet,
/// which is where first touches happen).
pub fn advise_spare<T>(v: &mut Vec<T>) {
    let spare = v.spare_capacity_mut();
    advise_range(spare.as_ptr() as usize, std::mem::size_of_val(spare));
}

fn advise_range(start: usize, len: usize) {
    if len < MIN_LEN {
        return;
    }
    let page = 4096;
    let first = start.next_multiple_of(page);
    let end = (start + len) & !(page - 1);
    if end <= first {
        return;
    }
    let Some(ptr) = std::ptr::NonNull::new(first as *mut std::ffi::c_void) else { return };
    // SAFETY: `[first, end)` is page-aligned and lies inside one live
    // allocation the caller borrows (`buf` or the vector's capacity), so it is
    // mapped memory of this process. MADV_HUGEPAGE only sets a flag on the
    // mapping: it neither moves, frees nor changes any byte of it, so no
    // reference into the buffer is affected.
    let _ = unsafe { nix::sys::mman::madvise(ptr, end - first, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_leaves_the_contents_alone() {
        let mut v: Vec<u64> = Vec::with_capacity(2 << 20);
        advise_spare(&mut v);
        v.extend(0..(2 << 20) as u64);
        advise(&v);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
        // Small or empty buffers are no-ops.
        advise::<u8>(&[]);
        advise_spare(&mut Vec::<u8>::new());
    }
}
