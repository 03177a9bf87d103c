//! Seed: store data in a shared memory map with `Value` and `Array`.
//!
//! ```python
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! if __name__ == '__main__':
//!     num = Value('d', 0.0)
//!     arr = Array('i', range(10))
//!     p = Process(target=f, args=(num, arr))
//!     p.start()
//!     p.join()
//!     print(num.value)
//!     print(arr[:])
//! ```
//!
//! expect: 3.1415927
//! expect: [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]

use multiproc::{Array, Process, Value};

#[multiproc::task]
fn f(n: Value<f64>, a: Array<i32>) {
    #[expect(clippy::approx_constant)] // the seed's number, not PI
    n.set(3.1415927);
    for i in 0..a.len() {
        a.set(i, -a.get(i).expect("in range")).expect("in range");
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start().await?;
    p.join().await?;
    println!("{}", num.get());
    println!("{:?}", arr.to_vec());
    Ok(())
}
