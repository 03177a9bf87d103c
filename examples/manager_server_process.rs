//! Seed: the server process behind `Manager()`; a child fills a dict and
//! reverses a list. Python's dict takes keys of mixed types; here the key is
//! an enum that says which.
//!
//! ```python
//! def f(d, l):
//!     d[1] = '1'
//!     d['2'] = 2
//!     d[0.25] = None
//!     l.reverse()
//!
//! if __name__ == '__main__':
//!     with Manager() as manager:
//!         d = manager.dict()
//!         l = manager.list(range(10))
//!         p = Process(target=f, args=(d, l))
//!         p.start()
//!         p.join()
//!         print(d)
//!         print(l)
//! ```
//!
//! expect: {1: '1', '2': 2, 0.25: None}
//! expect: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]

use std::fmt;

use multiproc::{DictProxy, ListProxy, Manager, Process};
use serde::{Deserialize, Serialize};

/// A Python value of the kinds the seed uses.
#[derive(Serialize, Deserialize)]
enum Py {
    Int(i64),
    Str(String),
    Float(f64),
    None,
}

impl fmt::Display for Py {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Py::Int(i) => write!(f, "{i}"),
            Py::Str(s) => write!(f, "'{s}'"),
            Py::Float(x) => write!(f, "{x}"),
            Py::None => write!(f, "None"),
        }
    }
}

#[multiproc::task]
fn f(d: DictProxy<Py, Py>, l: ListProxy<i32>) {
    d.blocking_set(Py::Int(1), Py::Str("1".into())).expect("d[1] = '1'");
    d.blocking_set(Py::Str("2".into()), Py::Int(2)).expect("d['2'] = 2");
    d.blocking_set(Py::Float(0.25), Py::None).expect("d[0.25] = None");
    l.blocking_reverse().expect("l.reverse()");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let manager = Manager::start().await?;
    let d = manager.dict::<Py, Py>().await?;
    let l = manager.list(0..10).await?;

    let mut p = Process::new(f, (d.clone(), l.clone()));
    p.start().await?;
    p.join().await?;

    let items: Vec<String> = d.items().await?.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("{{{}}}", items.join(", "));
    println!("{:?}", l.to_vec().await?);
    manager.shutdown().await
}
