//! A bound on the bytes of images held whole in memory at once.
//!
//! Large images are spooled to disk as they arrive and go to storage from there, so memory
//! does not grow with the image. Some answers need the image whole: one converted to another
//! format (`output_format`), and one the answer carries (`b64_json`, streamed events). Such an
//! image holds its size from an [`ImageMemoryBudget`] from the moment it is read into memory
//! until its generation is dropped (after its answer is written); a request whose image does
//! not fit waits for room. The image was made and paid for by then, so it waits rather than
//! fails: what waits is a file on disk, not memory.
//!
//! The images of one request (`n` of them) are answered together, so they must never wait on
//! each other: within an [`ImageMemoryScope`] only the first image waits (while its request
//! holds nothing, so no request waits while holding: no deadlock); the others take what is
//! free at once, or go over the budget (counted in `image_bytes_over_budget_total`). The
//! memory held is thus at most the budget plus, per request holding some, its other `n - 1`
//! images.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is kept in KiB, so that a semaphore's `u32` permits cover up to 4 TiB.
const UNIT_BYTES: u64 = 1024;

/// The default: 256 MiB, sixteen 16 MB 4K images whole at once.
pub const DEFAULT_MAX_IMAGE_BYTES_IN_FLIGHT: u64 = 256 * 1024 * 1024;

/// How many bytes of images may be held whole at once (`NB_MAX_IMAGE_BYTES_IN_FLIGHT`).
#[derive(Debug, Clone)]
pub struct ImageMemoryBudget {
    units: Arc<Semaphore>,
    capacity: u32,
}

/// Bytes of the budget held by one image; given back when dropped.
#[derive(Debug)]
pub struct HeldImageBytes {
    /// Given back when dropped; `None` when the image went over the budget.
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl HeldImageBytes {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the image is held beyond the budget (see the module's note).
    pub fn over_budget(&self) -> bool {
        self.permit.is_none()
    }
}

/// The images of one request (see the module's note).
#[derive(Debug)]
pub struct ImageMemoryScope {
    budget: ImageMemoryBudget,
    holding: AtomicBool,
}

impl ImageMemoryScope {
    /// The request's first image waits for room; the others take it if it is free, or go
    /// over the budget.
    pub async fn hold(&self, bytes: u64) -> HeldImageBytes {
        if !self.holding.swap(true, Ordering::SeqCst) {
            return self.budget.hold(bytes).await;
        }
        let permit = Arc::clone(&self.budget.units)
            .try_acquire_many_owned(self.budget.units_of(bytes))
            .ok();
        if permit.is_none() {
            metrics::counter!("image_bytes_over_budget_total").increment(bytes);
        }
        HeldImageBytes { permit, bytes }
    }
}

impl ImageMemoryBudget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: u64) -> Self {
        let capacity = u32::try_from(bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            units: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// A scope for the images of one request.
    pub fn scope(&self) -> ImageMemoryScope {
        ImageMemoryScope {
            budget: self.clone(),
            holding: AtomicBool::new(false),
        }
    }

    /// Waits until `bytes` fit, and holds them. An image larger than the whole budget waits
    /// for all of it: it is then held whole alone.
    pub async fn hold(&self, bytes: u64) -> HeldImageBytes {
        let permit = Arc::clone(&self.units)
            .acquire_many_owned(self.units_of(bytes))
            .await
            .expect("the budget's semaphore is never closed");
        HeldImageBytes {
            permit: Some(permit),
            bytes,
        }
    }

    fn units_of(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity)
    }

    /// Bytes not held now (rounded down to a KiB).
    pub fn available(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT_BYTES
    }
}

impl Default for ImageMemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IMAGE_BYTES_IN_FLIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn images_that_do_not_fit_wait_for_room_and_get_it_when_one_is_dropped() {
        let budget = ImageMemoryBudget::new(40 * MIB);
        let first = budget.hold(16 * MIB).await;
        let second = budget.hold(16 * MIB).await;
        assert_eq!(budget.available(), 8 * MIB);
        let third = budget.hold(16 * MIB);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third 16 MiB image must wait in 40 MiB"
        );
        drop(first);
        let third = third.await;
        assert_eq!(third.bytes(), 16 * MIB);
        drop((second, third));
        assert_eq!(budget.available(), 40 * MIB);
    }

    #[tokio::test]
    async fn the_images_of_one_request_never_wait_on_each_other() {
        let budget = ImageMemoryBudget::new(20 * MIB);
        let request = budget.scope();
        let first = request.hold(16 * MIB).await;
        let second = tokio::time::timeout(Duration::from_millis(500), request.hold(16 * MIB))
            .await
            .expect("a request's second image must not wait for its first");
        assert!(!first.over_budget());
        assert!(second.over_budget());
        let third = request.hold(4 * MIB).await;
        assert!(!third.over_budget(), "what is free is taken");
        assert_eq!(budget.available(), 0);
        // Another request's first image waits as usual.
        let other = budget.scope();
        let waiting = other.hold(MIB);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err()
        );
        drop((first, second, third));
        let held = waiting.await;
        assert_eq!(budget.available(), 19 * MIB);
        drop(held);
        assert_eq!(budget.available(), 20 * MIB);
    }

    #[tokio::test]
    async fn an_image_larger_than_the_budget_is_held_alone() {
        let budget = ImageMemoryBudget::new(8 * MIB);
        let small = budget.hold(MIB).await;
        let huge = budget.hold(20 * MIB);
        tokio::pin!(huge);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut huge)
                .await
                .is_err()
        );
        drop(small);
        let huge = huge.await;
        assert_eq!(budget.available(), 0);
        drop(huge);
        assert_eq!(budget.available(), 8 * MIB);
    }
}
