//! The hostile-input suite: clients and boxes that misbehave on purpose against a real
//! corral on loopback. Each test asserts what the attacker is answered, that the slot
//! it held comes back within the configured deadline, and that corral still serves.
//! (Boxes that misbehave under fleet operations and health probes: hostile_backends.rs.)

mod common;
#[path = "hostile/raw.rs"]
mod raw;

#[path = "hostile/clients.rs"]
mod clients;
#[path = "hostile/framing.rs"]
mod framing;
#[path = "hostile/listeners.rs"]
mod listeners;
#[path = "hostile/malformed.rs"]
mod malformed;

use common::Corral;

/// In-flight requests on the first backend, as the admin API shows them.
pub async fn in_flight(c: &Corral) -> Option<u64> {
    c.admin("/api/v1/backends").await?[0]["in_flight"].as_u64()
}

/// Waits until the first backend's in-flight count is `n`.
pub async fn wait_in_flight(c: &Corral, n: u64) {
    common::wait_for(&format!("{n} in flight"), || async {
        (in_flight(c).await? == n).then_some(())
    })
    .await
}
