//! Seed: a manager hosts a list and a dict; a child changes them; the parent
//! sees the changes.
//!
//! ```python
//! def worker(l, d):
//!     l[1] = 100
//!     d["b"] = "Updated"
//!
//! with Manager() as manager:
//!     l = manager.list([1, 2, 3])
//!     d = manager.dict({"a": "Initial", "b": "Original"})
//!     p = Process(target=worker, args=(l, d))
//!     p.start()
//!     p.join()
//!     print(l)  # [1, 100, 3]
//!     print(d)  # {'a': 'Initial', 'b': 'Updated'}
//! ```
//!
//! expect: [1, 100, 3]
//! expect: [("a", "Initial"), ("b", "Updated")]

use multiproc::{DictProxy, ListProxy, Manager, Process};

#[multiproc::task]
fn worker(l: ListProxy<i32>, d: DictProxy<String, String>) {
    l.blocking_set(1, 100).expect("l[1] = 100");
    d.blocking_set("b".into(), "Updated".into()).expect("d['b'] = 'Updated'");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let manager = Manager::start().await?;
    let l = manager.list([1, 2, 3]).await?;
    let d = manager.dict_from([("a".to_string(), "Initial".to_string()), ("b".into(), "Original".into())]).await?;

    let mut p = Process::new(worker, (l.clone(), d.clone()));
    p.start().await?;
    p.join().await?;

    println!("{:?}", l.to_vec().await?);
    println!("{:?}", d.items().await?);
    manager.shutdown().await
}
