//! What keeps a record in order, by `--ordering` (DESIGN §5 "Ordering"), pure: the scheduler
//! lane it runs in, and the key under which it is parked while an earlier record of its order
//! waits in a retry tier.
//!
//! - `partition`: one lane per partition; a record parked in a tier holds back every later
//!   record of its partition.
//! - `key`: one lane per partition and key; a parked record holds back its key. Null keys are
//!   unordered: no lane, never parked.
//! - `unordered`: no lane, never parked.
//!
//! Without retry tiers nothing is ever parked, so no parking key is built per record.

use std::sync::Arc;

use super::{assignment::Tp, config::Ordering};

/// A lane of the scheduler: a partition, optionally narrowed to one key.
pub type Lane = (Tp, Option<Vec<u8>>);

/// What a record's order through the tiers is kept by: its main topic and key, or its main
/// topic and partition number.
pub type ParkingKey = (Arc<str>, Vec<u8>);

/// The lane of a record of partition `tp` with `key`; `None`: it runs beside anything.
pub fn lane(ordering: Ordering, tp: &Tp, key: Option<&[u8]>) -> Option<Lane> {
    match ordering {
        Ordering::Partition => Some((tp.clone(), None)),
        Ordering::Key => key.map(|k| (tp.clone(), Some(k.to_vec()))),
        Ordering::Unordered => None,
    }
}

/// The parking key of a record of `main`'s partition `partition` with `key`, when the worker
/// has retry tiers (`tiered`); `None`: the record is never parked.
pub fn parking_key(
    ordering: Ordering,
    tiered: bool,
    main: &Arc<str>,
    key: Option<&[u8]>,
    partition: i32,
) -> Option<ParkingKey> {
    if !tiered {
        return None;
    }
    match ordering {
        Ordering::Key => key.map(|k| (main.clone(), k.to_vec())),
        Ordering::Partition => Some((main.clone(), partition.to_be_bytes().to_vec())),
        Ordering::Unordered => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        (Arc::from("orders"), 3)
    }

    #[test]
    fn lanes_by_ordering() {
        assert_eq!(
            lane(Ordering::Partition, &tp(), Some(b"k")),
            Some((tp(), None))
        );
        assert_eq!(lane(Ordering::Partition, &tp(), None), Some((tp(), None)));
        assert_eq!(
            lane(Ordering::Key, &tp(), Some(b"k")),
            Some((tp(), Some(b"k".to_vec())))
        );
        assert_eq!(
            lane(Ordering::Key, &tp(), None),
            None,
            "null keys are unordered"
        );
        assert_eq!(lane(Ordering::Unordered, &tp(), Some(b"k")), None);
    }

    #[test]
    fn parking_keys_by_ordering_and_only_with_tiers() {
        let main: Arc<str> = Arc::from("orders");
        let key = Some(&b"k"[..]);
        assert_eq!(
            parking_key(Ordering::Key, true, &main, key, 3),
            Some((main.clone(), b"k".to_vec()))
        );
        assert_eq!(parking_key(Ordering::Key, true, &main, None, 3), None);
        assert_eq!(
            parking_key(Ordering::Partition, true, &main, key, 3),
            Some((main.clone(), 3i32.to_be_bytes().to_vec()))
        );
        assert_eq!(parking_key(Ordering::Unordered, true, &main, key, 3), None);
        for ordering in [Ordering::Key, Ordering::Partition, Ordering::Unordered] {
            assert_eq!(
                parking_key(ordering, false, &main, key, 3),
                None,
                "no tiers"
            );
        }
    }
}
