//! The CIFAR-10 batch loader on arbitrary bytes: an error or whole records with valid
//! labels, never a panic. Each input is tried as it is and padded to whole 3073-byte
//! records (a random input almost never has a valid length), so that the record and
//! label checks are reached.
#![no_main]

use fixpoint::data::cifar::{parse_cifar_batch, preprocess};
use libfuzzer_sys::fuzz_target;

const RECORD: usize = 3073;

fn check(bytes: &[u8], want: Option<usize>) {
    if let Ok(b) = parse_cifar_batch(bytes, "fuzz", want) {
        assert_eq!(bytes.len() % RECORD, 0);
        assert_eq!(b.pixels.len(), b.labels.len() * 3072);
        assert!(b.labels.iter().all(|&l| l < 10));
        if let Some(n) = want {
            assert_eq!(b.labels.len(), n);
        }
        let set = preprocess("fuzz", &[b]).expect("valid records preprocess");
        assert_eq!(set.len(), bytes.len() / RECORD);
    }
}

fuzz_target!(|data: &[u8]| {
    let want = data.first().map(|&b| usize::from(b % 4));
    // Labels spread over the records: byte i of the input becomes record i's label.
    let records = data.len().div_ceil(64).max(1);
    let mut padded = vec![0u8; records * RECORD];
    for (i, &b) in data.iter().enumerate() {
        if i < records {
            padded[i * RECORD] = b;
        } else {
            padded[i] ^= b;
        }
    }
    for bytes in [data, &padded[..]] {
        check(bytes, None);
        check(bytes, want);
    }
});
