//! The machine's clock, time-ordered ids and the operating system's CSPRNG behind the
//! domain's system ports.

use nb_domain::system::{Clock, IdGenerator, RandomSource, RandomnessUnavailable, to_microseconds};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        // Databases keep microseconds: cut here so values read back equal values written.
        to_microseconds(OffsetDateTime::now_utc())
    }
}

/// Time-ordered UUIDv7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Ids;

impl IdGenerator for UuidV7Ids {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&self, dest: &mut [u8]) -> Result<(), RandomnessUnavailable> {
        getrandom::fill(dest).map_err(|_| RandomnessUnavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_keeps_microseconds() {
        assert_eq!(SystemClock.now().nanosecond() % 1_000, 0);
    }

    #[test]
    fn ids_are_new_and_time_ordered() {
        let (first, second) = (UuidV7Ids.new_id(), UuidV7Ids.new_id());
        assert_ne!(first, second);
        assert_eq!(first.get_version_num(), 7);
        assert!(first < second);
    }

    #[test]
    fn randomness_fills_every_byte() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        OsRandom.fill_bytes(&mut a).unwrap();
        OsRandom.fill_bytes(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
