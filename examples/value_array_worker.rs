//! Seed: `Value` and `Array` in shared memory, changed by a child.
//!
//! ```python
//! def worker(val, arr):
//!     val.value = 100
//!     for i in range(len(arr)):
//!         arr[i] = -arr[i]
//!
//! val = Value('i', 0)
//! arr = Array('d', [1.0, 2.0, 3.0])
//! p = Process(target=worker, args=(val, arr))
//! p.start()
//! p.join()
//! print(val.value)  # 100
//! print(arr[:])     # [-1.0, -2.0, -3.0]
//! ```
//!
//! expect: 100
//! expect: [-1.0, -2.0, -3.0]

use multiproc::{Array, Process, Value};

#[multiproc::task]
fn worker(val: Value<i32>, arr: Array<f64>) {
    val.set(100);
    for i in 0..arr.len() {
        arr.set(i, -arr.get(i).expect("in range")).expect("in range");
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let val = Value::new(0i32)?;
    let arr = Array::from_slice(&[1.0, 2.0, 3.0])?;
    let mut p = Process::new(worker, (val.clone(), arr.clone()));
    p.start().await?;
    p.join().await?;
    println!("{}", val.get());
    println!("{:?}", arr.to_vec());
    Ok(())
}
