//! The SDK against fake routers (see `fake.rs`): operations, failover,
//! retries and the indeterminate rule. Timings are only bounded generously
//! so a broken retry loop fails instead of hanging.

mod failover;
mod fake;
mod ops;
mod proxy;

use std::time::Duration;

use tessera_client::{Backoff, Client};

/// A client of `endpoints` with a short backoff.
async fn client(endpoints: &[String], timeout: Duration) -> Client {
    Client::builder()
        .endpoints(endpoints.iter().cloned())
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .backoff(Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(50),
        })
        .build()
        .await
        .expect("client builds")
}
