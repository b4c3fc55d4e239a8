//! The committer against scripted store answers.

use std::time::Duration;

use super::lock_ttl_ms;
use crate::config::Config;

#[test]
fn lock_ttl_grows_with_size_and_age() {
    let config = Config::default();
    // Small transactions get the default TTL plus their age.
    assert_eq!(lock_ttl_ms(&config, 100, 0), 3_000);
    assert_eq!(lock_ttl_ms(&config, 100, 250), 3_250);
    // 1 MiB: 6 s (client-go's ttlFactor times the square root of the size in MiB).
    assert_eq!(lock_ttl_ms(&config, 1024 * 1024, 0), 6_000);
    // 4 MiB: 12 s; 100 MiB is capped at the managed TTL.
    assert_eq!(lock_ttl_ms(&config, 4 * 1024 * 1024, 0), 12_000);
    assert_eq!(lock_ttl_ms(&config, 100 * 1024 * 1024, 0), 20_000);
    // Just at the batch size the square-root rule starts but stays at the floor.
    assert_eq!(lock_ttl_ms(&config, 16 * 1024, 0), 3_000);
    let short = Config::default().with_default_lock_ttl(Duration::from_millis(100));
    assert_eq!(lock_ttl_ms(&short, 10, 5), 105);
}
