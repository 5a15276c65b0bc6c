//! IDX files (the MNIST / Fashion-MNIST format) and the Fashion-MNIST dataset.
//!
//! ```text
//! bytes 0-1 : 0x00 0x00
//! byte  2   : element type (0x08 u8; the others are rejected: Fashion-MNIST is all u8)
//! byte  3   : number of dimensions n
//! then      : n × u32 big-endian dimension sizes
//! then      : the data, row-major, last dimension fastest
//! ```
//!
//! Files may be gzip-compressed (detected by the gzip magic `1f 8b`, decoded with
//! `flate2`) or plain. The parser checks the magic number, the number of dimensions,
//! the expected dimension sizes and that the length is exactly header + product(dims);
//! a violation is a [`DataError`] with the file name and byte offset (offsets in a
//! `.gz` file count decompressed bytes).
//!
//! The dataset directory is `--data-dir`, else `$FIXPOINT_FASHION_MNIST_DIR`, else
//! `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`).

use super::DataError;
use super::images::{Fit28, ImageSet, pad_zero, resize_bilinear};
use crate::error::Result;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Default location of the Debian package's files.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable overriding [`FASHION_MNIST_DEFAULT_DIR`].
pub const FASHION_MNIST_DIR_ENV: &str = "FIXPOINT_FASHION_MNIST_DIR";
/// Training-set pixel statistics of the real data (pixels scaled to `[0, 1]`).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
pub const FASHION_MNIST_STD: f32 = 0.3530;
/// Class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A parsed IDX array of u8 elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
    /// Header length in bytes (data starts here).
    pub header_len: usize,
}

fn io_err(path: &Path, e: std::io::Error) -> DataError {
    DataError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// The largest decompressed size accepted (the real training images are 47 MB): a
/// small corrupt or hostile `.gz` cannot exhaust memory.
pub const MAX_GUNZIPPED: usize = 1 << 30;

/// The bytes of `path`, gunzipped when the file starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| io_err(path, e))?;
    gunzip_maybe(raw, &path.display().to_string(), MAX_GUNZIPPED)
}

/// `raw` gunzipped when it starts with the gzip magic, else itself; at most `max`
/// decompressed bytes. `path` names the source in errors.
pub fn gunzip_maybe(raw: Vec<u8>, path: &str, max: usize) -> Result<Vec<u8>, DataError> {
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity((raw.len() * 2).min(max));
    let mut dec = MultiGzDecoder::new(&raw[..]);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() + n > max => {
                return Err(DataError::Gzip {
                    path: path.to_string(),
                    offset: out.len() as u64,
                    message: format!("decompresses to more than {max} bytes"),
                });
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DataError::Gzip {
                    path: path.to_string(),
                    offset: out.len() as u64,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Parse the bytes of an IDX file, gzipped or plain (what [`load_idx_images`] and
/// [`load_idx_labels`] do after reading the file): images `[n, rows, cols]` when
/// `labels` is `None`, else labels `[n]` each below `labels`. For fuzzing and tests.
pub fn parse_bytes(raw: &[u8], path: &str, labels: Option<usize>, max_gunzipped: usize) -> Result<IdxArray, DataError> {
    let bytes = gunzip_maybe(raw.to_vec(), path, max_gunzipped)?;
    match labels {
        None => parse_idx(&bytes, path, &[None, Some(28), Some(28)]),
        Some(classes) => check_labels(parse_idx(&bytes, path, &[None])?, path, classes),
    }
}

fn check_labels(a: IdxArray, path: &str, classes: usize) -> Result<IdxArray, DataError> {
    if let Some(i) = a.data.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::BadLabel {
            path: path.to_string(),
            offset: (a.header_len + i) as u64,
            value: a.data[i],
            classes,
        });
    }
    Ok(a)
}

/// Parse IDX `bytes` (from `path`, for messages) holding u8 elements with `ndims`
/// dimensions. `expect[i] = Some(d)` requires dimension `i` to be `d`.
pub fn parse_idx(bytes: &[u8], path: &str, expect: &[Option<usize>]) -> Result<IdxArray, DataError> {
    let ndims = expect.len();
    let truncated = |needed: usize, what: &str| DataError::Truncated {
        path: path.to_string(),
        offset: bytes.len() as u64,
        needed: needed as u64,
        what: what.to_string(),
    };
    if bytes.len() < 4 {
        return Err(truncated(4, "the IDX magic number"));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let want = 0x0800 | ndims as u32;
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::BadMagic { path: path.to_string(), offset: 0, found: magic, expected: want });
    }
    if bytes[2] != 0x08 {
        return Err(DataError::BadHeader {
            path: path.to_string(),
            offset: 2,
            message: format!("element type 0x{:02X} (only 0x08, unsigned byte, is supported)", bytes[2]),
        });
    }
    if bytes[3] as usize != ndims {
        return Err(DataError::BadMagic { path: path.to_string(), offset: 0, found: magic, expected: want });
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(truncated(header_len, "the IDX header"));
    }
    let mut dims = Vec::with_capacity(ndims);
    for (i, want) in expect.iter().enumerate() {
        let o = 4 + 4 * i;
        let d = u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize;
        if let Some(w) = want
            && d != *w
        {
            return Err(DataError::BadHeader {
                path: path.to_string(),
                offset: o as u64,
                message: format!("dimension {i} is {d}, expected {w}"),
            });
        }
        dims.push(d);
    }
    let total =
        dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_add(header_len)).ok_or_else(
            || DataError::BadHeader {
                path: path.to_string(),
                offset: 4,
                message: format!("dimensions {dims:?} overflow"),
            },
        )?;
    if bytes.len() < total {
        return Err(truncated(total, &format!("the IDX data for dimensions {dims:?}")));
    }
    if bytes.len() > total {
        return Err(DataError::TrailingBytes { path: path.to_string(), offset: total as u64, len: bytes.len() as u64 });
    }
    Ok(IdxArray { dims, data: bytes[header_len..].to_vec(), header_len })
}

/// Images file: `[n, rows, cols]` u8 (any `n`).
pub fn load_idx_images(path: &Path, rows: usize, cols: usize) -> Result<IdxArray, DataError> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes, &path.display().to_string(), &[None, Some(rows), Some(cols)])
}

/// Labels file: `[n]` u8, each below `classes`.
pub fn load_idx_labels(path: &Path, classes: usize) -> Result<IdxArray, DataError> {
    let bytes = read_maybe_gz(path)?;
    let p = path.display().to_string();
    check_labels(parse_idx(&bytes, &p, &[None])?, &p, classes)
}

/// The directory to read Fashion-MNIST from: `dir`, else the environment variable,
/// else the default.
pub fn fashion_mnist_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os(FASHION_MNIST_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DEFAULT_DIR)),
    }
}

/// `dir/name.gz` when it exists, else `dir/name` when it exists.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Some(gz);
    }
    let plain = dir.join(name);
    plain.is_file().then_some(plain)
}

const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Whether all four Fashion-MNIST files (gzipped or plain) are in `dir`.
pub fn fashion_mnist_available(dir: &Path) -> bool {
    FILES.iter().all(|f| find_file(dir, f).is_some())
}

/// One split of an MNIST-style dataset as raw u8 images `[n, 28, 28]` and labels.
pub fn load_mnist_split(dir: &Path, images: &str, labels: &str) -> Result<(IdxArray, Vec<u8>), DataError> {
    let missing = |name: &str| DataError::Io {
        path: dir.join(format!("{name}[.gz]")).display().to_string(),
        message: "no such file (install the Debian package dataset-fashion-mnist or pass --data-dir)".into(),
    };
    let ip = find_file(dir, images).ok_or_else(|| missing(images))?;
    let lp = find_file(dir, labels).ok_or_else(|| missing(labels))?;
    let img = load_idx_images(&ip, 28, 28)?;
    let lab = load_idx_labels(&lp, 10)?;
    if img.dims[0] != lab.dims[0] {
        return Err(DataError::CountMismatch {
            images: ip.display().to_string(),
            labels: lp.display().to_string(),
            n_images: img.dims[0],
            n_labels: lab.dims[0],
        });
    }
    Ok((img, lab.data))
}

/// Preprocess `[n, 28, 28]` u8 images (random-teachers spec §4): `x/255`, resize or pad
/// to 32×32, normalise with `(x − mean)/std`. One stored channel, replicated to 3 by
/// [`ImageSet::batch`].
pub fn preprocess_28(name: &str, img: &IdxArray, labels: Vec<u8>, fit: Fit28) -> Result<ImageSet> {
    let n = img.dims[0];
    let mut out = Vec::with_capacity(n * 32 * 32);
    let mut plane = vec![0f32; 28 * 28];
    for i in 0..n {
        for (p, &b) in plane.iter_mut().zip(&img.data[i * 784..(i + 1) * 784]) {
            *p = b as f32 / 255.0;
        }
        let big = match fit {
            Fit28::Resize => resize_bilinear(&plane, 28, 28, 32, 32),
            Fit28::Pad => pad_zero(&plane, 28, 28, 2),
        };
        out.extend(big.iter().map(|&v| (v - FASHION_MNIST_MEAN) / FASHION_MNIST_STD));
    }
    ImageSet::new(name, out, labels.into_iter().map(usize::from).collect(), [1, 3, 32, 32], 10)
}

/// Fashion-MNIST train (60,000) and test (10,000) sets from `dir`, preprocessed to
/// normalised 3×32×32 images.
pub fn load_fashion_mnist(dir: &Path, fit: Fit28) -> Result<(ImageSet, ImageSet)> {
    let (ti, tl) = load_mnist_split(dir, FILES[0], FILES[1])?;
    let train = preprocess_28("fashion-mnist/train", &ti, tl, fit)?;
    drop(ti);
    let (vi, vl) = load_mnist_split(dir, FILES[2], FILES[3])?;
    let test = preprocess_28("fashion-mnist/test", &vi, vl, fit)?;
    Ok((train, test))
}
