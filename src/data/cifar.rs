//! CIFAR-10 binary batches, for users who have the files (they cannot be downloaded
//! here).
//!
//! Directory (conventionally `cifar-10-batches-bin/`): `data_batch_1.bin` …
//! `data_batch_5.bin` (train) and `test_batch.bin` (test). Each file holds records of
//! 3073 bytes: one label byte (0–9), then 1024 R, 1024 G and 1024 B bytes, each plane a
//! row-major 32×32 image. The real files hold 10,000 records (30,730,000 bytes each).
//!
//! Preprocessing: `x/255`, then per channel `(x − mean)/std` with the reference's
//! mean (0.4914, 0.4822, 0.4465) and std (0.247, 0.243, 0.261).

use super::DataError;
use super::images::ImageSet;
use crate::error::Result;
use std::path::Path;

/// Bytes per record: one label and 3 × 32 × 32 pixels.
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;
/// Records in each file of the real dataset.
pub const RECORDS_PER_FILE: usize = 10_000;
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.247, 0.243, 0.261];
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";

/// Raw records of one batch file: pixels `[n, 3, 32, 32]` u8 and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarBatch {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

/// Parse the bytes of one batch file (`path` names it in errors). With
/// `records = Some(n)` the file must hold exactly `n` records.
pub fn parse_cifar_batch(bytes: &[u8], path: &str, records: Option<usize>) -> Result<CifarBatch, DataError> {
    let whole = bytes.len() / RECORD_BYTES;
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        // The incomplete record starts at whole * RECORD_BYTES.
        let needed = ((whole + 1) * RECORD_BYTES) as u64;
        return Err(DataError::Truncated {
            path: path.to_string(),
            offset: bytes.len() as u64,
            needed,
            what: format!("record {whole} (3073-byte records, the last one starts at byte {})", whole * RECORD_BYTES),
        });
    }
    if let Some(n) = records {
        if whole < n {
            return Err(DataError::Truncated {
                path: path.to_string(),
                offset: bytes.len() as u64,
                needed: (n * RECORD_BYTES) as u64,
                what: format!("a CIFAR-10 batch of {n} records"),
            });
        }
        if whole > n {
            return Err(DataError::TrailingBytes {
                path: path.to_string(),
                offset: (n * RECORD_BYTES) as u64,
                len: bytes.len() as u64,
            });
        }
    }
    let mut pixels = Vec::with_capacity(whole * (RECORD_BYTES - 1));
    let mut labels = Vec::with_capacity(whole);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] >= 10 {
            return Err(DataError::BadLabel {
                path: path.to_string(),
                offset: (i * RECORD_BYTES) as u64,
                value: rec[0],
                classes: 10,
            });
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok(CifarBatch { pixels, labels })
}

/// Read and parse one batch file.
pub fn load_cifar_batch(path: &Path, records: Option<usize>) -> Result<CifarBatch, DataError> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::Io { path: path.display().to_string(), message: e.to_string() })?;
    parse_cifar_batch(&bytes, &path.display().to_string(), records)
}

/// Normalised `[n, 3, 32, 32]` images from raw batches.
pub fn preprocess(name: &str, batches: &[CifarBatch]) -> Result<ImageSet> {
    let n: usize = batches.iter().map(|b| b.labels.len()).sum();
    let mut images = Vec::with_capacity(n * 3 * 1024);
    let mut labels = Vec::with_capacity(n);
    for b in batches {
        for (rec, &l) in b.pixels.chunks_exact(3 * 1024).zip(&b.labels) {
            for (c, plane) in rec.chunks_exact(1024).enumerate() {
                let (m, s) = (CIFAR10_MEAN[c], CIFAR10_STD[c]);
                images.extend(plane.iter().map(|&p| (p as f32 / 255.0 - m) / s));
            }
            labels.push(l as usize);
        }
    }
    ImageSet::new(name, images, labels, [3, 3, 32, 32], 10)
}

/// Whether `dir` holds all six batch files.
pub fn cifar10_available(dir: &Path) -> bool {
    TRAIN_FILES.iter().chain([&TEST_FILE]).all(|f| dir.join(f).is_file())
}

/// CIFAR-10 train (50,000) and test (10,000) from `dir`. With `strict`, every file
/// must hold exactly 10,000 records (the real dataset); without, any whole number of
/// records is accepted (small files written by tests).
pub fn load_cifar10(dir: &Path, strict: bool) -> Result<(ImageSet, ImageSet)> {
    let records = strict.then_some(RECORDS_PER_FILE);
    let mut train = Vec::with_capacity(TRAIN_FILES.len());
    for f in TRAIN_FILES {
        train.push(load_cifar_batch(&dir.join(f), records)?);
    }
    let train = preprocess("cifar10/train", &train)?;
    let test = preprocess("cifar10/test", &[load_cifar_batch(&dir.join(TEST_FILE), records)?])?;
    Ok((train, test))
}
