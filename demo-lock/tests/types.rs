//! A memfd sent as one type and received as another is refused: a `&u64` must never see memory
//! that an atomic of another handle changes, nor a guard's `&mut` overlap another handle's `&`.

use std::sync::atomic::{AtomicU64, Ordering};

use demo_lock::{ProcessMutex, Shared, fds};

#[test]
fn a_shared_value_is_received_only_as_its_own_type() {
    let a = Shared::new(AtomicU64::new(1)).unwrap();
    let same: Shared<AtomicU64> = fds::decode(fds::encode(&a).unwrap()).unwrap();
    same.store(2, Ordering::Relaxed);
    assert_eq!(
        a.load(Ordering::Relaxed),
        2,
        "the same memory, received as its own type"
    );

    let other = fds::decode::<Shared<u64>>(fds::encode(&a).unwrap());
    assert!(other.is_err(), "an AtomicU64 received as a u64 is refused");
}

#[test]
fn a_mutex_and_a_shared_value_are_not_taken_for_each_other() {
    let shared = Shared::new(AtomicU64::new(0)).unwrap();
    let as_mutex = fds::decode::<ProcessMutex<u64>>(fds::encode(&shared).unwrap());
    assert!(
        as_mutex.is_err(),
        "a Shared's memory received as a ProcessMutex"
    );

    let mutex = ProcessMutex::new(7u64).unwrap();
    let as_other = fds::decode::<ProcessMutex<i64>>(fds::encode(&mutex).unwrap());
    assert!(
        as_other.is_err(),
        "a ProcessMutex<u64> received as a ProcessMutex<i64>"
    );
    let same: ProcessMutex<u64> = fds::decode(fds::encode(&mutex).unwrap()).unwrap();
    assert_eq!(*same.acquire().unwrap(), 7);
}
