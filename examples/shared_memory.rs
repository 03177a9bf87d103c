//! `multiprocessing.shared_memory.SharedMemory`: create a named segment,
//! let a child write into it by name, read it back, close and unlink.
//!
//! ```python
//! from multiprocessing import Process, shared_memory
//!
//! def child(name):
//!     shm = shared_memory.SharedMemory(name=name)
//!     shm.buf[:5] = b'howdy'
//!     shm.close()
//!
//! shm = shared_memory.SharedMemory(create=True, size=10)
//! p = Process(target=child, args=(shm.name,))
//! p.start(); p.join()
//! print(bytes(shm.buf[:5]))   # b'howdy'
//! shm.close()
//! shm.unlink()
//! ```
//!
//! expect: read back: howdy
//! expect: unlinked: true

use multiproc::{Process, SharedMemory};

#[multiproc::task]
fn child(name: String) {
    let shm = SharedMemory::attach(&name).expect("attach by name");
    shm.write(0, b"howdy").expect("write");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let shm = SharedMemory::create(10)?;
    let mut p = Process::new(child, (shm.name().to_string(),));
    p.start().await?;
    p.join().await?;
    let mut buf = [0u8; 5];
    shm.read(0, &mut buf)?;
    println!("read back: {}", String::from_utf8_lossy(&buf));
    shm.unlink()?;
    println!("unlinked: {}", !std::path::Path::new("/dev/shm").join(shm.name()).exists());
    Ok(())
}
