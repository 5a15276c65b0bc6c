//! The IDX loader (gzip or plain, images and labels) on arbitrary bytes: an error or
//! a well-formed array, never a panic, a hang or a huge allocation.
#![no_main]

use fixpoint::data::idx::{parse_bytes, preprocess_28};
use fixpoint::data::images::Fit28;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 64 MiB of decompressed data at most, so that a gzip bomb cannot take the
    // fuzzer's memory (the loader's own cap is 1 GiB).
    let max = 64 << 20;
    if let Ok(img) = parse_bytes(data, "fuzz-images", None, max) {
        assert_eq!(img.data.len(), img.dims.iter().product::<usize>());
        let n = img.dims[0];
        if n <= 16 {
            let labels = vec![0u8; n];
            let set = preprocess_28("fuzz", &img, labels, Fit28::Pad).expect("valid images preprocess");
            assert_eq!(set.len(), n);
        }
    }
    if let Ok(lab) = parse_bytes(data, "fuzz-labels", Some(10), max) {
        assert_eq!(lab.dims.len(), 1);
        assert!(lab.data.iter().all(|&l| l < 10));
    }
});
