//! The CIFAR-10 batch loader on arbitrary bytes: an error or whole records with valid
//! labels, never a panic.
#![no_main]

use fixpoint::data::cifar::{parse_cifar_batch, preprocess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records = data.first().map(|&b| usize::from(b % 4));
    for want in [None, records] {
        if let Ok(b) = parse_cifar_batch(data, "fuzz", want) {
            assert_eq!(b.pixels.len(), b.labels.len() * 3072);
            assert!(b.labels.iter().all(|&l| l < 10));
            if let Some(n) = want {
                assert_eq!(b.labels.len(), n);
            }
            let set = preprocess("fuzz", &[b]).expect("valid records preprocess");
            assert_eq!(set.len(), data.len() / 3073);
        }
    }
});
