//! Data loaders for the random-teacher job: IDX (plain and gzip) and CIFAR-10 binary
//! files written by the tests (well-formed, truncated and corrupt), the preprocessing,
//! the embedded and noise sets, and the real Fashion-MNIST when it is installed.

use fixpoint::Error;
use fixpoint::data::cifar::{self, RECORD_BYTES, load_cifar_batch, load_cifar10, parse_cifar_batch};
use fixpoint::data::idx::{self, fashion_mnist_available, load_mnist_split, parse_idx, preprocess_28};
use fixpoint::data::images::{Fit28, pad_zero, resize_bilinear};
use fixpoint::data::noise::gaussian_noise_images;
use fixpoint::data::synthetic_images::{EmbeddedConfig, embedded_images};
use fixpoint::data::{DataError, ImageSet};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fixpoint-dino-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` 28×28 images whose pixel (r, c) of image i is (i*7 + r*3 + c) mod 256, labels i mod 10.
fn mnist_like(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut px = Vec::new();
    for i in 0..n {
        for r in 0..28 {
            for c in 0..28 {
                px.push(((i * 7 + r * 3 + c) % 256) as u8);
            }
        }
    }
    (px, (0..n).map(|i| (i % 10) as u8).collect())
}

fn write_split(dir: &Path, stem: &str, n: usize, gzip: bool) {
    let (px, lab) = mnist_like(n);
    let img = idx_bytes(&[n as u32, 28, 28], &px);
    let lbl = idx_bytes(&[n as u32], &lab);
    let (img, lbl, ext) = if gzip { (gz(&img), gz(&lbl), ".gz") } else { (img, lbl, "") };
    std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte{ext}")), img).unwrap();
    std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte{ext}")), lbl).unwrap();
}

fn data_err(r: Result<impl std::fmt::Debug, DataError>) -> DataError {
    r.expect_err("expected a data error")
}

#[test]
fn idx_round_trip_plain_and_gzip() {
    for gzip in [false, true] {
        let dir = tmp_dir(if gzip { "idx-gz" } else { "idx-plain" });
        write_split(&dir, "train", 13, gzip);
        write_split(&dir, "t10k", 4, gzip);
        assert!(fashion_mnist_available(&dir));
        let (img, lab) = load_mnist_split(&dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte").unwrap();
        let (px, want_lab) = mnist_like(13);
        assert_eq!(img.dims, vec![13, 28, 28]);
        assert_eq!(img.header_len, 16);
        assert_eq!(img.data, px);
        assert_eq!(lab, want_lab);
        // Pixel (i, r, c) is at offset 16 + 784 i + 28 r + c of the raw file.
        let raw =
            idx::read_maybe_gz(&dir.join(if gzip { "train-images-idx3-ubyte.gz" } else { "train-images-idx3-ubyte" }))
                .unwrap();
        assert_eq!(raw[16 + 784 * 5 + 28 * 3 + 2], (5 * 7 + 3 * 3 + 2) as u8);
        let (train, test) = idx::load_fashion_mnist(&dir, Fit28::Resize).unwrap();
        assert_eq!((train.len(), test.len()), (13, 4));
        assert_eq!((train.channels, train.out_channels, train.height, train.width, train.classes), (1, 3, 32, 32, 10));
        // The 3 channels handed out are copies of the stored plane.
        let row = train.rows(&[2]).unwrap();
        assert_eq!(row.len(), 3072);
        assert_eq!(&row[..1024], &row[1024..2048]);
        assert_eq!(&row[..1024], &row[2048..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn preprocessing_matches_an_f64_reference() {
    let (px, lab) = mnist_like(3);
    let img = parse_idx(&idx_bytes(&[3, 28, 28], &px), "mem", &[None, Some(28), Some(28)]).unwrap();
    for fit in [Fit28::Resize, Fit28::Pad] {
        let set = preprocess_28("t", &img, lab.clone(), fit).unwrap();
        for i in 0..3 {
            let plane = &set.images[i * 1024..(i + 1) * 1024];
            for y in 0..32 {
                for x in 0..32 {
                    let src = |r: usize, c: usize| px[i * 784 + r * 28 + c] as f64 / 255.0;
                    let want = match fit {
                        Fit28::Pad => {
                            if (2..30).contains(&y) && (2..30).contains(&x) {
                                src(y - 2, x - 2)
                            } else {
                                0.0
                            }
                        }
                        Fit28::Resize => {
                            let coord = |d: usize| ((d as f64 + 0.5) * 28.0 / 32.0 - 0.5).max(0.0);
                            let (sy, sx) = (coord(y), coord(x));
                            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                            let (y1, x1) = ((y0 + 1).min(27), (x0 + 1).min(27));
                            let (fy, fx) = (sy - y0 as f64, sx - x0 as f64);
                            (1.0 - fy) * ((1.0 - fx) * src(y0, x0) + fx * src(y0, x1))
                                + fy * ((1.0 - fx) * src(y1, x0) + fx * src(y1, x1))
                        }
                    };
                    let want = (want - 0.2860) / 0.3530;
                    let got = plane[y * 32 + x] as f64;
                    assert!((got - want).abs() < 1e-5, "{fit:?} image {i} ({y}, {x}): {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn bilinear_resize_by_hand_and_constant_images() {
    // 2×2 → 4×4 with half-pixel centres: source coordinates -0.25→0, 0.25, 0.75, 1.25→edge.
    let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
    let want = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
    assert_eq!(out, want);
    // A constant image stays constant, 28 → 32 and odd sizes.
    for (sh, sw, dh, dw) in [(28, 28, 32, 32), (7, 5, 13, 3), (1, 1, 4, 4)] {
        let out = resize_bilinear(&vec![0.37; sh * sw], sh, sw, dh, dw);
        assert_eq!(out.len(), dh * dw);
        assert!(out.iter().all(|&v| (v - 0.37).abs() < 1e-6), "{sh}x{sw} -> {dh}x{dw}");
    }
    let p = pad_zero(&[1.0, 2.0, 3.0, 4.0], 2, 2, 1);
    assert_eq!(p, [0., 0., 0., 0., 0., 1., 2., 0., 0., 3., 4., 0., 0., 0., 0., 0.]);
}

#[test]
fn idx_truncated_and_corrupt_files_name_file_and_offset() {
    let (px, lab) = mnist_like(4);
    let good = idx_bytes(&[4, 28, 28], &px);
    // Truncated data: ends at byte len - 100 while 16 + 4·784 are needed.
    let e = data_err(parse_idx(&good[..good.len() - 100], "imgs", &[None, Some(28), Some(28)]));
    assert_eq!(
        e,
        DataError::Truncated {
            path: "imgs".into(),
            offset: (good.len() - 100) as u64,
            needed: 16 + 4 * 784,
            what: "the IDX data for dimensions [4, 28, 28]".into()
        }
    );
    assert!(e.to_string().contains("imgs") && e.to_string().contains(&format!("byte {}", good.len() - 100)));
    // Truncated header.
    let e = data_err(parse_idx(&good[..10], "imgs", &[None, Some(28), Some(28)]));
    assert!(matches!(e, DataError::Truncated { offset: 10, needed: 16, .. }), "{e}");
    let e = data_err(parse_idx(&good[..2], "imgs", &[None, Some(28), Some(28)]));
    assert!(matches!(e, DataError::Truncated { offset: 2, needed: 4, .. }), "{e}");
    // Bad magic: nonzero leading bytes, or the label magic where images are expected.
    let mut bad = good.clone();
    bad[0] = 0x1f;
    assert!(matches!(
        data_err(parse_idx(&bad, "imgs", &[None, Some(28), Some(28)])),
        DataError::BadMagic { offset: 0, expected: 0x0803, .. }
    ));
    let labels = idx_bytes(&[4], &lab);
    assert!(matches!(
        data_err(parse_idx(&labels, "lbl", &[None, Some(28), Some(28)])),
        DataError::BadMagic { found: 0x0801, expected: 0x0803, .. }
    ));
    // Unsupported element type (i32) at byte 2.
    let mut bad = good.clone();
    bad[2] = 0x0C;
    assert!(matches!(data_err(parse_idx(&bad, "imgs", &[None, None, None])), DataError::BadHeader { offset: 2, .. }));
    // Wrong image size: dimension 1 (byte 8) is 27.
    let e = data_err(parse_idx(&idx_bytes(&[4, 27, 28], &px[..4 * 27 * 28]), "imgs", &[None, Some(28), Some(28)]));
    assert!(matches!(e, DataError::BadHeader { offset: 8, .. }), "{e}");
    // Trailing garbage.
    let mut long = good.clone();
    long.extend_from_slice(&[1, 2, 3]);
    assert_eq!(
        data_err(parse_idx(&long, "imgs", &[None, Some(28), Some(28)])),
        DataError::TrailingBytes { path: "imgs".into(), offset: good.len() as u64, len: good.len() as u64 + 3 }
    );
}

#[test]
fn idx_files_on_disk_label_count_and_gzip_errors() {
    let dir = tmp_dir("idx-bad");
    write_split(&dir, "train", 6, true);
    write_split(&dir, "t10k", 3, false);
    let li = dir.join("t10k-labels-idx1-ubyte");
    // A label of 10 at index 2: byte 8 + 2.
    std::fs::write(&li, idx_bytes(&[3], &[1, 2, 10])).unwrap();
    let e = idx::load_fashion_mnist(&dir, Fit28::Resize).unwrap_err();
    match &e {
        Error::Data(DataError::BadLabel { path, offset: 10, value: 10, classes: 10 }) => {
            assert!(path.ends_with("t10k-labels-idx1-ubyte"))
        }
        other => panic!("{other}"),
    }
    // 3 images but 2 labels.
    std::fs::write(&li, idx_bytes(&[2], &[1, 2])).unwrap();
    match idx::load_fashion_mnist(&dir, Fit28::Resize).unwrap_err() {
        Error::Data(DataError::CountMismatch { n_images: 3, n_labels: 2, .. }) => {}
        other => panic!("{other}"),
    }
    // A gzip file cut short: the error names the file and how far decompression got.
    let gzp = dir.join("train-images-idx3-ubyte.gz");
    let full = std::fs::read(&gzp).unwrap();
    std::fs::write(&gzp, &full[..full.len() / 2]).unwrap();
    match idx::read_maybe_gz(&gzp).unwrap_err() {
        DataError::Gzip { path, offset, .. } => {
            assert!(path.ends_with("train-images-idx3-ubyte.gz"));
            assert!(offset < 16 + 6 * 784);
        }
        other => panic!("{other}"),
    }
    // A corrupt gzip (checksum trailer flipped): detected, never silently accepted.
    let mut bad = full.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xFF;
    std::fs::write(&gzp, &bad).unwrap();
    assert!(matches!(idx::read_maybe_gz(&gzp).unwrap_err(), DataError::Gzip { .. }));
    // A missing file is an Io error naming it.
    std::fs::remove_file(&gzp).unwrap();
    assert!(!fashion_mnist_available(&dir));
    let e = idx::load_fashion_mnist(&dir, Fit28::Resize).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cifar_records(n: usize, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        b.push((i % 10) as u8);
        for c in 0..3 {
            for p in 0..1024 {
                b.push(((i * 31 + c * 80 + p + seed as usize) % 256) as u8);
            }
        }
    }
    b
}

#[test]
fn cifar_records_planes_and_normalisation() {
    let bytes = cifar_records(3, 0);
    assert_eq!(bytes.len(), 3 * 3073);
    let b = parse_cifar_batch(&bytes, "mem", None).unwrap();
    assert_eq!(b.labels, vec![0, 1, 2]);
    let set = cifar::preprocess("t", &[b]).unwrap();
    assert_eq!((set.len(), set.channels, set.out_channels), (3, 3, 3));
    let (mean, std) = ([0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]);
    for i in 0..3 {
        for c in 0..3 {
            for p in [0usize, 1, 511, 1023] {
                // Record i: label at 3073 i, channel c plane starts at 3073 i + 1 + 1024 c (R, G, B).
                let raw = bytes[3073 * i + 1 + 1024 * c + p] as f64;
                let want = (raw / 255.0 - mean[c]) / std[c];
                let got = set.images[i * 3072 + c * 1024 + p] as f64;
                assert!((got - want).abs() < 1e-5, "image {i} channel {c} pixel {p}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn cifar_truncated_bad_label_and_strict_counts() {
    let bytes = cifar_records(3, 1);
    let e = data_err(parse_cifar_batch(&bytes[..2 * 3073 + 100], "b.bin", None));
    assert!(
        matches!(e, DataError::Truncated { offset, needed, .. } if offset == 2 * 3073 + 100 && needed == 3 * 3073),
        "{e}"
    );
    assert!(e.to_string().contains("b.bin") && e.to_string().contains("starts at byte 6146"), "{e}");
    assert!(matches!(data_err(parse_cifar_batch(&[], "b.bin", None)), DataError::Truncated { offset: 0, .. }));
    let mut bad = bytes.clone();
    bad[2 * RECORD_BYTES] = 11;
    assert_eq!(
        data_err(parse_cifar_batch(&bad, "b.bin", None)),
        DataError::BadLabel { path: "b.bin".into(), offset: 2 * 3073, value: 11, classes: 10 }
    );
    // Strict: the real files hold 10,000 records each.
    assert!(matches!(
        data_err(parse_cifar_batch(&bytes, "b.bin", Some(10_000))),
        DataError::Truncated { needed: 30_730_000, .. }
    ));
    assert!(matches!(
        data_err(parse_cifar_batch(&bytes, "b.bin", Some(2))),
        DataError::TrailingBytes { offset: 6146, .. }
    ));
    assert_eq!(parse_cifar_batch(&bytes, "b.bin", Some(3)).unwrap().labels.len(), 3);
}

#[test]
fn cifar_directory_loader() {
    let dir = tmp_dir("cifar");
    for (k, f) in cifar::TRAIN_FILES.iter().enumerate() {
        std::fs::write(dir.join(f), cifar_records(2, k as u8)).unwrap();
    }
    assert!(!cifar::cifar10_available(&dir));
    std::fs::write(dir.join(cifar::TEST_FILE), cifar_records(4, 9)).unwrap();
    assert!(cifar::cifar10_available(&dir));
    let (train, test) = load_cifar10(&dir, false).unwrap();
    assert_eq!((train.len(), test.len()), (10, 4));
    assert_eq!(train.labels, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    // Strict mode rejects the small files, naming the first one.
    let e = load_cifar10(&dir, true).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("truncated"), "{e}");
    std::fs::write(dir.join("data_batch_3.bin"), &cifar_records(2, 0)[..5000]).unwrap();
    match load_cifar10(&dir, false).unwrap_err() {
        Error::Data(DataError::Truncated { path, offset: 5000, .. }) => assert!(path.ends_with("data_batch_3.bin")),
        other => panic!("{other}"),
    }
    assert!(matches!(load_cifar_batch(&dir.join("nope.bin"), None), Err(DataError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn channel_stats(set: &ImageSet, c: usize) -> (f64, f64) {
    let dim = set.channels * 1024;
    let vals: Vec<f64> = (0..set.len())
        .flat_map(|i| set.images[i * dim + c * 1024..i * dim + (c + 1) * 1024].iter().map(|&v| v as f64))
        .collect();
    let m = vals.iter().sum::<f64>() / vals.len() as f64;
    (m, (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt())
}

#[test]
fn embedded_set_is_seeded_balanced_and_normalised() {
    let cfg = EmbeddedConfig { train_per_class: 30, test_per_class: 5, noise: 0.5 };
    let (train, test) = embedded_images(&cfg, 4).unwrap();
    assert_eq!((train.len(), test.len(), train.classes, train.dim()), (300, 50, 10, 3072));
    for k in 0..10 {
        assert_eq!(train.labels.iter().filter(|&&l| l == k).count(), 30);
        assert_eq!(test.labels.iter().filter(|&&l| l == k).count(), 5);
    }
    for c in 0..3 {
        let (m, s) = channel_stats(&train, c);
        assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-4, "channel {c}: mean {m} std {s}");
    }
    assert_eq!(embedded_images(&cfg, 4).unwrap().0, train);
    assert_ne!(embedded_images(&cfg, 5).unwrap().0.images, train.images);
    assert!(embedded_images(&EmbeddedConfig { train_per_class: 0, ..cfg }, 0).is_err());
    // Class structure: the class means differ far more than chance.
    let mean_img = |k: usize| -> Vec<f64> {
        let idx: Vec<usize> = (0..train.len()).filter(|&i| train.labels[i] == k).collect();
        let mut m = vec![0.0; 3072];
        for &i in &idx {
            for (a, &v) in m.iter_mut().zip(&train.images[i * 3072..(i + 1) * 3072]) {
                *a += v as f64 / idx.len() as f64;
            }
        }
        m
    };
    let (m0, m5) = (mean_img(0), mean_img(5));
    let dist: f64 = m0.iter().zip(&m5).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    assert!(dist > 5.0, "class means only {dist} apart");
}

#[test]
fn gaussian_noise_is_standard_normal_and_unlabelled() {
    let set = gaussian_noise_images(200, 1).unwrap();
    assert_eq!((set.len(), set.classes, set.dim()), (200, 1, 3072));
    for c in 0..3 {
        let (m, s) = channel_stats(&set, c);
        assert!(m.abs() < 0.01 && (s - 1.0).abs() < 0.01, "channel {c}: mean {m} std {s}");
    }
    assert_eq!(gaussian_noise_images(200, 1).unwrap(), set);
    assert!(gaussian_noise_images(0, 1).is_err());
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = idx::fashion_mnist_dir(None);
    if !fashion_mnist_available(&dir) {
        let msg = format!("real Fashion-MNIST not found in {} (apt-get install dataset-fashion-mnist)", dir.display());
        if std::env::var("FIXPOINT_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("FIXPOINT_REQUIRE_DATA=1 but {msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let (img, lab) = load_mnist_split(&dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte").unwrap();
    assert_eq!(img.dims, vec![60_000, 28, 28]);
    let mut counts = [0usize; 10];
    lab.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6000; 10]);
    // Statistics of the raw training pixels scaled to [0, 1] (fashion-mnist.md).
    let n = img.data.len() as f64;
    let mean = img.data.iter().map(|&b| b as f64 / 255.0).sum::<f64>() / n;
    let var = img.data.iter().map(|&b| (b as f64 / 255.0 - mean).powi(2)).sum::<f64>() / n;
    assert!((mean - 0.2860).abs() < 5e-5 && (var.sqrt() - 0.3530).abs() < 5e-5, "mean {mean} std {}", var.sqrt());
    let (ti, tl) = load_mnist_split(&dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte").unwrap();
    assert_eq!(ti.dims, vec![10_000, 28, 28]);
    let mut counts = [0usize; 10];
    tl.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
    // After resize and normalisation (with the 28×28 statistics) the mean stays near 0;
    // bilinear upsampling averages neighbours, so the std drops a little below 1.
    let set = preprocess_28("train", &img, lab, Fit28::Resize).unwrap();
    let (m, s) = channel_stats(&set, 0);
    assert!(m.abs() < 0.01 && (0.9..1.0).contains(&s), "normalised mean {m} std {s}");
}

#[test]
fn gunzipped_size_is_capped_and_parse_bytes_matches_the_file_loader() {
    // A gzip bomb in miniature: 1 MiB of zeros compresses to about 1 KiB.
    let big = idx_bytes(&[1 << 20], &vec![0u8; 1 << 20]);
    let bomb = gz(&big);
    assert!(bomb.len() < 8 << 10);
    match idx::gunzip_maybe(bomb.clone(), "bomb.gz", 64 << 10).unwrap_err() {
        DataError::Gzip { path, message, .. } => {
            assert_eq!(path, "bomb.gz");
            assert!(message.contains("more than 65536 bytes"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    // Under the cap the same bytes parse, exactly as the file loader parses them.
    let labels = idx::parse_bytes(&bomb, "bomb.gz", Some(10), 2 << 20).unwrap();
    assert_eq!((labels.dims.clone(), labels.data.len()), (vec![1 << 20], 1 << 20));
    let img = idx_bytes(&[3, 28, 28], &mnist_like(3).0);
    let a = idx::parse_bytes(&gz(&img), "i.gz", None, idx::MAX_GUNZIPPED).unwrap();
    let b = idx::parse_bytes(&img, "i", None, idx::MAX_GUNZIPPED).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.dims, [3, 28, 28]);
}
