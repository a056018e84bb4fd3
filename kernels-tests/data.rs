//! The data layer: CIFAR-10 and image-folder readers on files written here, their errors, the
//! synthetic set, the split, augmentation and the background loader.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proxyless::data::{
    crop_flip_into, is_cifar_dir, load, load_cifar, load_image_folder, resized_crop_flip_into,
    split, synthetic, Augment, CifarSplit, Dataset, Loader, Normalize, CIFAR_RECORD,
};

/// A directory under the system temp dir, unique to this process and test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("proxyless-data-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_err_has<T>(r: anyhow::Result<T>, parts: &[&str]) {
    let e = err_of(r);
    for p in parts {
        assert!(e.contains(p), "error {e:?} lacks {p:?}");
    }
}

/// Byte of channel `c`, pixel `p` of CIFAR record `r` in the generated files.
fn cifar_byte(r: usize, c: usize, p: usize) -> u8 {
    ((r * 7 + c * 50 + p * 3) % 256) as u8
}

/// CIFAR records `first..first+labels.len()`, planar, with the given labels.
fn cifar_records(first: usize, labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, &l) in labels.iter().enumerate() {
        out.push(l);
        for c in 0..3 {
            for p in 0..1024 {
                out.push(cifar_byte(first + k, c, p));
            }
        }
    }
    out
}

#[test]
fn cifar_planar_records_become_nhwc_in_file_order() {
    let dir = TempDir::new("cifar_ok");
    fs::write(
        dir.path().join("data_batch_1.bin"),
        cifar_records(0, &[3, 9]),
    )
    .unwrap();
    fs::write(dir.path().join("data_batch_2.bin"), cifar_records(2, &[0])).unwrap();
    fs::write(dir.path().join("test_batch.bin"), cifar_records(5, &[7])).unwrap();
    assert!(is_cifar_dir(dir.path()));

    let d = load_cifar(dir.path(), CifarSplit::Train).unwrap();
    assert_eq!((d.len(), d.height, d.width), (3, 32, 32));
    assert_eq!(d.labels, vec![3, 9, 0]);
    assert_eq!(
        d.class_names,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    for r in 0..3 {
        let img = d.image(r);
        for p in 0..1024 {
            for c in 0..3 {
                assert_eq!(
                    img[p * 3 + c],
                    cifar_byte(r, c, p),
                    "record {r} pixel {p} channel {c}"
                );
            }
        }
    }
    // Row-major: pixel (y=1, x=2) is plane index 34.
    assert_eq!(d.image(1)[(32 + 2) * 3 + 2], cifar_byte(1, 2, 34));

    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    fs::write(dir.path().join("batches.meta.txt"), names).unwrap();
    let t = load(dir.path(), CifarSplit::Test, 99).unwrap();
    assert_eq!((t.len(), t.labels[0], t.height), (1, 7, 32));
    assert_eq!(t.image(0)[3 * 5 + 1], cifar_byte(5, 1, 5));
    assert_eq!(t.class_names[0], "airplane");
    assert_eq!(t.class_names[9], "truck");
}

#[test]
fn cifar_bad_input_names_the_file_and_the_fault() {
    let dir = TempDir::new("cifar_bad");
    let p = dir.path();
    assert_err_has(
        load_cifar(&p.join("nope"), CifarSplit::Train),
        &["nope", "does not exist"],
    );
    assert_err_has(
        load_cifar(p, CifarSplit::Train),
        &["data_batch_1.bin", "has no"],
    );

    let mut short = cifar_records(0, &[1, 2]);
    short.truncate(2 * CIFAR_RECORD - 5);
    fs::write(p.join("data_batch_1.bin"), &short).unwrap();
    let size = (2 * CIFAR_RECORD - 5).to_string();
    assert_err_has(
        load_cifar(p, CifarSplit::Train),
        &["data_batch_1.bin", &size, "3073", "not a whole number"],
    );
    fs::write(p.join("data_batch_1.bin"), b"").unwrap();
    assert_err_has(
        load_cifar(p, CifarSplit::Train),
        &["data_batch_1.bin", " 0 bytes"],
    );

    fs::write(p.join("data_batch_1.bin"), cifar_records(0, &[1, 10, 2])).unwrap();
    assert_err_has(
        load_cifar(p, CifarSplit::Train),
        &["data_batch_1.bin", "record 1", "label 10"],
    );

    fs::write(p.join("data_batch_1.bin"), cifar_records(0, &[1])).unwrap();
    assert_err_has(load_cifar(p, CifarSplit::Test), &["test_batch.bin"]);
    fs::write(p.join("batches.meta.txt"), "a\nb\nc\n").unwrap();
    assert_err_has(
        load_cifar(p, CifarSplit::Train),
        &["batches.meta.txt", "3 classes"],
    );
}

fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    img.save(path).unwrap();
}

#[test]
fn image_folder_reads_sorted_classes_resized_and_centre_cropped() {
    let dir = TempDir::new("folder_ok");
    let p = dir.path();
    for c in ["dog", "cat"] {
        fs::create_dir(p.join(c)).unwrap();
    }
    write_png(&p.join("cat/b.png"), 8, 8, |_, _| [10, 200, 30]);
    // 12x4: red, green, blue thirds; shorter side already 4, so the centre crop is the green
    // third exactly.
    write_png(&p.join("cat/a.PNG"), 12, 4, |x, _| match x / 4 {
        0 => [255, 0, 0],
        1 => [0, 255, 0],
        _ => [0, 0, 255],
    });
    write_png(&p.join("dog/x.png"), 4, 6, |x, y| {
        [(x * 10) as u8, (y * 40) as u8, 7]
    });
    fs::write(p.join("dog/notes.txt"), "not an image").unwrap();
    // JPEG is lossy: a flat colour comes back within a few levels.
    image::RgbImage::from_pixel(16, 16, image::Rgb([120, 60, 200]))
        .save(p.join("dog/y.jpg"))
        .unwrap();

    let d = load_image_folder(p, 4).unwrap();
    assert_eq!(d.class_names, vec!["cat", "dog"]);
    assert_eq!(d.labels, vec![0, 0, 1, 1]);
    assert_eq!(
        (d.len(), d.height, d.width, d.images.len()),
        (4, 4, 4, 4 * 48)
    );
    let jpeg_ok = d.image(3).chunks(3).all(|px| {
        px.iter()
            .zip([120u8, 60, 200])
            .all(|(&a, b)| a.abs_diff(b) <= 4)
    });
    assert!(jpeg_ok, "{:?}", d.image(3));
    assert!(
        d.image(0).chunks(3).all(|px| px == [0, 255, 0]),
        "{:?}",
        d.image(0)
    );
    // A constant image stays constant through the resize from 8 to 4.
    assert!(
        d.image(1).chunks(3).all(|px| px == [10, 200, 30]),
        "{:?}",
        d.image(1)
    );
    // 4x6 -> no resize, rows 1..5 kept: pixel (y=0, x=3) is source (x=3, y=1).
    assert_eq!(&d.image(2)[3 * 3..3 * 3 + 3], &[30, 40, 7]);
    assert!(!is_cifar_dir(p));
    assert_eq!(load(p, CifarSplit::Train, 4).unwrap().labels, d.labels);
    assert_err_has(load(p, CifarSplit::Test, 4), &["no test/ or val/"]);
}

#[test]
fn image_folder_with_train_and_test_parts() {
    let dir = TempDir::new("folder_parts");
    let p = dir.path();
    for part in ["train", "val"] {
        for c in ["a", "b"] {
            fs::create_dir_all(p.join(part).join(c)).unwrap();
            write_png(&p.join(part).join(c).join("1.png"), 5, 5, |_, _| [1, 2, 3]);
        }
    }
    write_png(&p.join("train/b/2.png"), 5, 5, |_, _| [1, 2, 3]);
    assert_eq!(load(p, CifarSplit::Train, 5).unwrap().labels, vec![0, 1, 1]);
    assert_eq!(load(p, CifarSplit::Test, 5).unwrap().labels, vec![0, 1]);
    fs::create_dir_all(p.join("val/c")).unwrap();
    write_png(&p.join("val/c/1.png"), 5, 5, |_, _| [1, 2, 3]);
    assert_err_has(load(p, CifarSplit::Train, 5), &["different class folders"]);
}

#[test]
fn image_folder_bad_input_names_the_path_and_the_fault() {
    let dir = TempDir::new("folder_bad");
    let p = dir.path();
    assert_err_has(
        load_image_folder(&p.join("gone"), 8),
        &["gone", "does not exist"],
    );
    assert_err_has(
        load(&p.join("gone"), CifarSplit::Train, 8),
        &["gone", "does not exist"],
    );
    assert_err_has(load_image_folder(p, 8), &["is empty"]);
    fs::write(p.join("loose.png"), b"x").unwrap();
    assert_err_has(load_image_folder(p, 8), &["has no class folders"]);
    assert_err_has(load(p, CifarSplit::Train, 8), &["neither", "CIFAR"]);

    fs::create_dir(p.join("ants")).unwrap();
    fs::create_dir(p.join("bees")).unwrap();
    write_png(&p.join("ants/1.png"), 3, 3, |_, _| [0, 0, 0]);
    fs::write(p.join("bees/readme.md"), "hi").unwrap();
    assert_err_has(load_image_folder(p, 8), &["bees", "no images"]);

    // Random bytes under an image name.
    let junk: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(p.join("bees/broken.png"), junk).unwrap();
    assert_err_has(load_image_folder(p, 8), &["broken.png", "does not decode"]);
    assert_err_has(load_image_folder(p, 0), &["image size 0"]);
}

/// Mean RGB of each image.
fn mean_colours(d: &Dataset) -> Vec<[f64; 3]> {
    (0..d.len())
        .map(|i| {
            let mut s = [0.0; 3];
            for px in d.image(i).chunks(3) {
                for c in 0..3 {
                    s[c] += px[c] as f64;
                }
            }
            s.map(|v| v / (d.height * d.width) as f64)
        })
        .collect()
}

/// Energy of the mean-removed luminance at spatial frequency (kx, ky).
fn energy(img: &[u8], size: usize, kx: f64, ky: f64) -> f64 {
    let lum: Vec<f64> = img
        .chunks(3)
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let (mut re, mut im) = (0.0, 0.0);
    for y in 0..size {
        for x in 0..size {
            let a = kx * x as f64 + ky * y as f64;
            let v = lum[y * size + x] - mean;
            re += v * a.cos();
            im += v * a.sin();
        }
    }
    re * re + im * im
}

#[test]
fn synthetic_is_deterministic_balanced_and_needs_spatial_features() {
    let (n, size) = (2000, 16);
    let d = synthetic(7, n, size);
    assert_eq!(
        (d.len(), d.height, d.width, d.classes()),
        (n, size, size, 10)
    );
    assert_eq!(d.images, synthetic(7, n, size).images);
    assert_ne!(d.images, synthetic(8, n, size).images);
    // A smaller set is a prefix of a larger one.
    assert_eq!(
        synthetic(7, 30, size).images[..],
        d.images[..30 * size * size * 3]
    );
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == n / 10), "{counts:?}");

    // Nearest class-mean colour, fitted on the first half, scored on the second: chance level.
    let means = mean_colours(&d);
    let half = n / 2;
    let mut centre = [[0.0f64; 3]; 10];
    for i in 0..half {
        for c in 0..3 {
            centre[d.labels[i] as usize][c] += means[i][c] / (half / 10) as f64;
        }
    }
    let dist = |a: &[f64; 3], b: &[f64; 3]| (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>();
    let hits = (half..n)
        .filter(|&i| {
            let best = (0..10)
                .min_by(|&a, &b| {
                    dist(&means[i], &centre[a]).total_cmp(&dist(&means[i], &centre[b]))
                })
                .unwrap();
            best == d.labels[i] as usize
        })
        .count();
    let acc = hits as f64 / half as f64;
    eprintln!("synthetic: nearest mean colour {acc:.3}");
    assert!(acc < 0.4, "mean colour predicts the class {acc}");

    // The classes are separable by what a CNN's oriented filters measure: the grating's energy
    // at each class's orientations and frequency (periods size/4 and size/2).
    let hits = (0..n)
        .filter(|&i| {
            let e: Vec<f64> = (0..10)
                .map(|l| {
                    let theta = (l % 5) as f64 * 22.5f64.to_radians();
                    let period = if l < 5 {
                        size as f64 / 4.0
                    } else {
                        size as f64 / 2.0
                    };
                    let k = std::f64::consts::TAU / period;
                    // A class holds both mirror images: +-theta.
                    let (kx, ky) = (k * theta.cos(), k * theta.sin());
                    energy(d.image(i), size, kx, ky).max(energy(d.image(i), size, kx, -ky))
                })
                .collect();
            let best = (0..10).max_by(|&a, &b| e[a].total_cmp(&e[b])).unwrap();
            best == d.labels[i] as usize
        })
        .count();
    let acc = hits as f64 / n as f64;
    eprintln!("synthetic: oriented energy {acc:.3}");
    assert!(acc > 0.95, "an oriented-energy detector gets only {acc}");

    // Mirror images share a class (so a flip augmentation keeps labels right): the oblique
    // classes come at +theta and at -theta about equally often.
    let k = std::f64::consts::TAU / (size as f64 / 4.0);
    let t = 45f64.to_radians();
    let plus = (0..n)
        .filter(|&i| d.labels[i] == 2)
        .filter(|&i| {
            let e = |s: f64| energy(d.image(i), size, k * t.cos(), s * k * t.sin());
            e(1.0) > e(-1.0)
        })
        .count();
    let share = plus as f64 / (n / 10) as f64;
    assert!(
        (0.35..0.65).contains(&share),
        "+45 degrees in {share} of class 2"
    );
}

#[test]
fn split_is_fixed_disjoint_and_complete() {
    let s = split(1000, 137, 42);
    assert_eq!(s, split(1000, 137, 42));
    assert_ne!(s.valid, split(1000, 137, 43).valid);
    assert_eq!((s.train.len(), s.valid.len()), (863, 137));
    let mut all: Vec<usize> = s.train.iter().chain(&s.valid).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    // Held out is spread over the set, not a block at one end.
    assert!(s.valid.iter().any(|&i| i < 300) && s.valid.iter().any(|&i| i > 700));
    // Pinned (worked out independently from the SplitMix64 definition): the held-out set
    // must never move between versions or machines.
    assert_eq!(split(20, 4, 1).valid, vec![3, 6, 7, 19]);
    assert_eq!(split(5, 0, 1).train, vec![0, 1, 2, 3, 4]);
    assert_eq!(split(5, 5, 1).valid, vec![0, 1, 2, 3, 4]);
}

/// `n` 2x2 images, every byte of image `i` equal to `i`, label `i % 7`.
fn indexed(n: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        images: (0..n).flat_map(|i| [i as u8; 12]).collect(),
        labels: (0..n).map(|i| (i % 7) as u8).collect(),
        height: 2,
        width: 2,
        class_names: (0..7).map(|i| i.to_string()).collect(),
    })
}

fn loader(
    d: &Arc<Dataset>,
    idx: Vec<usize>,
    batch: usize,
    shuffle: bool,
    drop_last: bool,
    aug: Augment,
    epoch: u64,
) -> Loader {
    Loader::new(
        d.clone(),
        idx,
        batch,
        shuffle,
        drop_last,
        aug,
        Normalize::IDENTITY,
        5,
        epoch,
        proxyless::data::Shard::whole(),
    )
}

/// The shards of a batch (a rank's parts) are its rows, bit for bit: augmentation draws per
/// image, so a rank that builds only its rows gets what the whole batch has there. A short last
/// batch is cut by its own size.
#[test]
fn sharded_loaders_yield_the_rows_of_the_whole_batch() {
    let d = synthetic(11, 90, 12);
    let idx: Vec<usize> = (0..90).collect();
    let aug = Augment::CropFlip { pad: 2 };
    let make = |shard| {
        Loader::new(
            d.clone().into(),
            idx.clone(),
            32,
            true,
            false,
            aug,
            Normalize::IDENTITY,
            7,
            3,
            shard,
        )
        .collect::<Vec<_>>()
    };
    let whole = make(proxyless::data::Shard::whole());
    assert_eq!(whole.len(), 3);
    // 3 ranks of 2 parts each: 6 parts a batch.
    let ranks: Vec<Vec<_>> = (0..3)
        .map(|r| {
            make(proxyless::data::Shard {
                parts: 6,
                first: 2 * r,
                count: 2,
            })
        })
        .collect();
    for (b, w) in whole.iter().enumerate() {
        let (mut images, mut labels, mut indices) = (Vec::new(), Vec::new(), Vec::new());
        for r in &ranks {
            let s = &r[b];
            assert_eq!(s.of, w.n);
            assert_eq!(s.parts.iter().sum::<usize>(), s.n);
            images.extend_from_slice(&s.images);
            labels.extend_from_slice(&s.labels);
            indices.extend_from_slice(&s.indices);
        }
        assert_eq!(indices, w.indices, "batch {b}");
        assert_eq!(labels, w.labels, "batch {b}");
        assert!(images == w.images, "batch {b}: the images differ");
    }
    // The short last batch (26 images) in parts of 4 and 5.
    assert_eq!(ranks[0][2].parts, vec![4, 4]);
    assert_eq!(ranks[2][2].parts, vec![4, 5]);
}

#[test]
fn loader_visits_every_index_once_in_batches() {
    let d = indexed(200);
    let idx: Vec<usize> = (0..103).map(|i| i * 2 % 200).collect();
    let l = loader(&d, idx.clone(), 32, true, false, Augment::None, 0);
    assert_eq!((l.batches(), l.len()), (4, 4));
    let batches: Vec<_> = l.collect();
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![32, 32, 32, 7]
    );
    let mut seen: Vec<usize> = Vec::new();
    for b in &batches {
        assert_eq!(
            (b.images.len(), b.labels.len(), b.height, b.width),
            (b.n * 12, b.n, 2, 2)
        );
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], (i % 7) as u32);
            let want = i as u8 as f32 / 255.0;
            assert!(
                b.images[k * 12..][..12].iter().all(|&v| v == want),
                "image of index {i}"
            );
        }
        seen.extend(&b.indices);
    }
    assert_ne!(seen, idx, "shuffle left the order unchanged");
    seen.sort_unstable();
    let mut want = idx.clone();
    want.sort_unstable();
    assert_eq!(seen, want);

    let in_order: Vec<usize> = loader(&d, idx.clone(), 32, false, false, Augment::None, 0)
        .flat_map(|b| b.indices)
        .collect();
    assert_eq!(in_order, idx);

    let dropped: Vec<_> = loader(&d, idx.clone(), 32, true, true, Augment::None, 0).collect();
    assert_eq!(dropped.len(), 3);
    assert!(dropped.iter().all(|b| b.n == 32));
    assert_eq!(
        loader(&d, idx[..31].to_vec(), 32, true, true, Augment::None, 0).count(),
        0
    );
    assert_eq!(
        loader(&d, Vec::new(), 32, true, false, Augment::None, 0).count(),
        0
    );
}

#[test]
fn loader_replays_an_epoch_bit_for_bit() {
    let d = Arc::new(synthetic(3, 300, 16));
    let idx: Vec<usize> = (0..300).collect();
    for aug in [Augment::CropFlip { pad: 4 }, Augment::ResizedCropFlip] {
        let a: Vec<_> = loader(&d, idx.clone(), 64, true, false, aug, 3).collect();
        let b: Vec<_> = loader(&d, idx.clone(), 64, true, false, aug, 3).collect();
        assert_eq!(a, b, "{aug:?}");
        let c: Vec<_> = loader(&d, idx.clone(), 64, true, false, aug, 4).collect();
        assert_ne!(a[0].indices, c[0].indices, "{aug:?}");
        // Same order, other epoch: the augmentation draws still differ.
        let e: Vec<_> = loader(&d, idx.clone(), 64, false, false, aug, 3).collect();
        let f: Vec<_> = loader(&d, idx.clone(), 64, false, false, aug, 4).collect();
        assert_eq!(e[0].indices, f[0].indices);
        assert_ne!(e[0].images, f[0].images, "{aug:?}");
        assert_eq!(e[0].images.len(), 64 * 16 * 16 * 3);
    }
}

#[test]
fn loader_dropped_mid_epoch_returns() {
    let d = Arc::new(synthetic(1, 400, 16));
    let idx: Vec<usize> = (0..400).collect();
    let mut l = loader(
        &d,
        idx.clone(),
        8,
        true,
        false,
        Augment::CropFlip { pad: 4 },
        0,
    );
    assert!(l.next().is_some());
    // The worker is now blocked on a full channel; dropping must close it and join.
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(l);
    drop(loader(&d, idx, 8, true, false, Augment::None, 1));
}

#[test]
fn crop_flip_mirrors_and_shifts_with_mean_padding() {
    let (h, w) = (3, 4);
    let src: Vec<u8> = (0..h * w * 3).map(|i| i as u8 * 5).collect();
    let norm = Normalize {
        mean: [0.1, 0.2, 0.3],
        std: [0.5, 0.25, 2.0],
    };
    let val = |y: usize, x: usize, c: usize| norm.apply(c, src[(y * w + x) * 3 + c]);
    let mut out = vec![f32::NAN; h * w * 3];

    crop_flip_into(&src, h, w, 0, 0, 0, false, &norm, &mut out);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                assert_eq!(out[(y * w + x) * 3 + c], val(y, x, c));
            }
        }
    }
    crop_flip_into(&src, h, w, 0, 0, 0, true, &norm, &mut out);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                assert_eq!(
                    out[(y * w + x) * 3 + c],
                    val(y, w - 1 - x, c),
                    "flip ({y},{x})"
                );
            }
        }
    }
    // Pad 2, crop at (0, 3): output (y, x) is source (y - 2, x + 1); outside is 0.
    crop_flip_into(&src, h, w, 2, 0, 3, false, &norm, &mut out);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (sy, sx) = (y as isize - 2, x + 1);
                let want = if sy >= 0 && sx < w {
                    val(sy as usize, sx, c)
                } else {
                    0.0
                };
                assert_eq!(out[(y * w + x) * 3 + c], want, "pad ({y},{x})");
            }
        }
    }
}

#[test]
fn resized_crop_is_exact_on_the_whole_image_and_bilinear_inside() {
    let (h, w) = (4, 6);
    let src: Vec<u8> = (0..h * w * 3).map(|i| (i * 3 % 256) as u8).collect();
    let norm = Normalize::IDENTITY;
    let mut out = vec![f32::NAN; h * w * 3];
    resized_crop_flip_into(
        &src,
        h,
        w,
        [0.0, 0.0, h as f64, w as f64],
        false,
        &norm,
        &mut out,
    );
    for (o, &s) in out.iter().zip(&src) {
        assert!((o - s as f32 / 255.0).abs() < 1e-6);
    }
    resized_crop_flip_into(
        &src,
        h,
        w,
        [0.0, 0.0, h as f64, w as f64],
        true,
        &norm,
        &mut out,
    );
    assert!((out[0] - src[(w - 1) * 3] as f32 / 255.0).abs() < 1e-6);

    // A constant-gradient image (value = 10 * x) cropped to its left half: each output column
    // samples halfway between source pixels, so values are linear with slope 5 per column.
    let grad: Vec<u8> = (0..h * w).flat_map(|i| [(10 * (i % w)) as u8; 3]).collect();
    resized_crop_flip_into(
        &grad,
        h,
        w,
        [0.0, 0.0, h as f64, 3.0],
        false,
        &norm,
        &mut out,
    );
    for x in 0..w {
        let want = (10.0 * ((x as f64 + 0.5) * 0.5 - 0.5).max(0.0)) as f32 / 255.0;
        assert!(
            (out[x * 3] - want).abs() < 1e-5,
            "column {x}: {} vs {want}",
            out[x * 3]
        );
    }
}

#[test]
fn normalize_of_measures_mean_and_std() {
    // Half the pixels 0, half 255 in channel 0; channel 1 constant; channel 2 all 51.
    let images: Vec<u8> = (0..8)
        .flat_map(|i| [if i % 2 == 0 { 0 } else { 255 }, 9, 51])
        .collect();
    let d = Dataset {
        images,
        labels: vec![0, 0],
        height: 2,
        width: 2,
        class_names: vec!["x".into()],
    };
    let n = Normalize::of(&d);
    assert!(
        (n.mean[0] - 0.5).abs() < 1e-6 && (n.std[0] - 0.5).abs() < 1e-6,
        "{n:?}"
    );
    assert_eq!(n.std[1], 1.0, "a constant channel gets std 1");
    assert!((n.mean[2] - 0.2).abs() < 1e-6);
    assert!((n.apply(0, 255) - 1.0).abs() < 1e-6);
}

/// The real CIFAR-10 files, when this checkout has them beside it.
#[test]
fn real_cifar10_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10");
    if !is_cifar_dir(&dir) {
        return;
    }
    let t0 = std::time::Instant::now();
    let train = load_cifar(&dir, CifarSplit::Train).unwrap();
    let took = t0.elapsed();
    let test = load_cifar(&dir, CifarSplit::Test).unwrap();
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.images.len(), 50_000 * 3072);
    assert!(train.labels.iter().chain(&test.labels).all(|&l| l <= 9));
    assert_eq!(train.class_names[0], "airplane");
    let mut counts = [0; 10];
    for &l in &train.labels {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 5000), "{counts:?}");
    let n = Normalize::of(&train);
    for c in 0..3 {
        assert!(
            (n.mean[c] - Normalize::CIFAR10.mean[c]).abs() < 0.01,
            "{n:?}"
        );
        assert!((n.std[c] - Normalize::CIFAR10.std[c]).abs() < 0.01, "{n:?}");
    }
    eprintln!("CIFAR-10 train set loaded in {took:?}");
}
