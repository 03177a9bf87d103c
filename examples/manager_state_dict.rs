//! Seed: ten processes each write one entry of a manager's dict; the parent
//! prints the whole dict once they have all joined
//! (`multiprocessing-state-manager.py`).
//!
//! ```python
//! def worker(dictionary, key, item):
//!     dictionary[key] = item
//!     print("key = %d value = %d" % (key, item))
//!
//! mgr = multiprocessing.Manager()
//! dictionary = mgr.dict()
//! jobs = [multiprocessing.Process(target=worker, args=(dictionary, i, i * 2)) for i in range(10)]
//! for j in jobs: j.start()
//! for j in jobs: j.join()
//! print('Results:', dictionary)
//! ```
//!
//! The children print in whatever order they run; the dict's entries are
//! printed sorted by key, so the last line is always the same.
//!
//! expect: key = 9 value = 18
//! expect: Results: {0: 0, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12, 7: 14, 8: 16, 9: 18}

use multiproc::{DictProxy, Manager, Process};

#[multiproc::task]
fn worker(dictionary: DictProxy<u32, u32>, key: u32, item: u32) {
    dictionary.blocking_set(key, item).expect("dictionary[key] = item");
    println!("key = {key} value = {item}");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let manager = Manager::start().await?;
    let dictionary = manager.dict::<u32, u32>().await?;
    let mut jobs: Vec<Process> = (0..10).map(|i| Process::new(worker, (dictionary.clone(), i, i * 2))).collect();
    for j in &mut jobs {
        j.start().await?;
    }
    for j in &jobs {
        j.join().await?;
    }
    let mut items = dictionary.items().await?;
    items.sort();
    let shown: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("Results: {{{}}}", shown.join(", "));
    manager.shutdown().await
}
