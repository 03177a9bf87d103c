//! Seed: a producer appends to a shared list and notifies; a consumer waits
//! on the condition until there is something to take. (The seed loops
//! forever; here the producer makes five products.)
//!
//! ```python
//! class Producer(multiprocessing.Process):
//!     def run(self):
//!         while True:
//!             product = random.randint(0, 100)
//!             with self.condition:
//!                 print("条件锁：被 生产者 获取")
//!                 self.productList.append(product)
//!                 print(f"生产者：产生了 {product}。")
//!                 print("生产者：唤醒消费者线程")
//!                 self.condition.notify()
//!                 print("条件锁：被 生产者 释放")
//!             time.sleep(1)
//!
//! class Customer(multiprocessing.Process):
//!     def run(self):
//!         while True:
//!             with self.condition:
//!                 print("条件锁：被 消费者 获取")
//!                 while True:
//!                     if self.productList:
//!                         product = self.productList.pop()
//!                         print(f"消费者：消费了 {product}")
//!                         break
//!                     print("消费者：等待生产者")
//!                     self.condition.wait()
//!                 print("条件锁：被 消费者 释放")
//!
//! manager = multiprocessing.Manager()
//! productList = manager.list()
//! condition = multiprocessing.Condition()
//! ```
//!
//! expect: 生产者：产生了
//! expect: 消费者：消费了
//! expect: consumed 5 products

use std::time::Duration;

use multiproc::{Condition, ListProxy, Manager, Process, Target};
use serde::{Deserialize, Serialize};

const PRODUCTS: u32 = 5;

#[derive(Serialize, Deserialize)]
struct Producer {
    product_list: ListProxy<u32>,
    condition: Condition,
}

#[multiproc::target]
impl Target for Producer {
    fn run(self) {
        for i in 0..PRODUCTS {
            let product = (std::process::id() * 31 + i * 17) % 101;
            {
                let with = self.condition.blocking_acquire().expect("acquire");
                println!("条件锁：被 生产者 获取");
                self.product_list.blocking_append(product).expect("append");
                println!("生产者：产生了 {product}。");
                println!("生产者：唤醒消费者线程");
                with.notify(1).expect("notify");
                println!("条件锁：被 生产者 释放");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Customer {
    product_list: ListProxy<u32>,
    condition: Condition,
}

#[multiproc::target]
impl Target for Customer {
    fn run(self) {
        for _ in 0..PRODUCTS {
            let mut with = self.condition.blocking_acquire().expect("acquire");
            println!("条件锁：被 消费者 获取");
            loop {
                if self.product_list.blocking_len().expect("len") > 0 {
                    let product = self.product_list.blocking_pop(None).expect("pop");
                    println!("消费者：消费了 {product}");
                    break;
                }
                println!("消费者：等待生产者");
                with.blocking_wait().expect("wait");
            }
            println!("条件锁：被 消费者 释放");
        }
        println!("consumed {PRODUCTS} products");
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let manager = Manager::start().await?;
    let product_list = manager.list(Vec::<u32>::new()).await?;
    let condition = Condition::new()?;
    let mut producer =
        Process::from_target(Producer { product_list: product_list.clone(), condition: condition.clone() });
    let mut customer = Process::from_target(Customer { product_list, condition });
    producer.start().await?;
    customer.start().await?;
    producer.join().await?;
    customer.join().await?;
    manager.shutdown().await
}
