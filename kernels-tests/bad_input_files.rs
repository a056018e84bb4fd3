//! Mutated inputs: every parser of user files (net config JSON, latency YAML, safetensors,
//! CIFAR-10 records, image files) is fed thousands of mutants of a valid file (bytes flipped,
//! inserted, deleted, chunks cut or repeated, numbers replaced by extreme ones). Each must give
//! an error or a valid result, never a panic. A net config that parses is also built on the
//! device and asked for its MACs, so a config that passes the parser cannot panic later.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proxyless::data::{load_cifar, load_image_folder, CifarSplit};
use proxyless::nas::latency::LatencyTable;
use proxyless::nn::params::load_safetensors;
use proxyless::nn::{NetConfig, Network};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::gpu;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Numbers a mutant may put where a number was.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e999",
    "-1e999",
    "NaN",
    "nan",
    "inf",
    "1e-320",
    "4294967296",
    "18446744073709551616",
    "9999999999",
    "0.5",
    "\"7\"",
    "null",
    "[]",
    "{}",
    "true",
];

/// One random mutation of `bytes`; `text` also swaps numbers for extremes.
fn mutate(rng: &mut StdRng, bytes: &[u8], text: bool) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..if text { 7 } else { 6 }) {
            0 => b[at] = rng.random(),
            1 => b[at] ^= 1 << rng.random_range(0..8),
            2 => b.insert(at, rng.random()),
            3 => {
                b.remove(at);
            }
            4 => b.truncate(at),
            5 => {
                let end = (at + rng.random_range(1..64)).min(b.len());
                let chunk = b[at..end].to_vec();
                let to = rng.random_range(0..b.len());
                b.splice(to..to, chunk);
            }
            _ => {
                // Replace the number (or word) around `at` with an extreme value.
                let is_num = |c: u8| c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'e';
                let (mut s, mut e) = (at, at);
                while s > 0 && is_num(b[s - 1]) {
                    s -= 1;
                }
                while e < b.len() && is_num(b[e]) {
                    e += 1;
                }
                let pick = EXTREMES[rng.random_range(0..EXTREMES.len())];
                b.splice(s..e, pick.bytes());
            }
        }
    }
    b
}

/// Runs `f` on `n` mutants of `seed_bytes`; returns (mutants, accepted, panics).
fn fuzz(
    name: &str,
    seed_bytes: &[u8],
    n: usize,
    text: bool,
    mut f: impl FnMut(&[u8]) -> bool,
) -> (usize, usize, usize) {
    let mut rng = StdRng::seed_from_u64(0xF022 ^ name.len() as u64);
    assert!(
        f(seed_bytes),
        "{name}: the unmutated input must be accepted"
    );
    let (mut ok, mut panics) = (0, 0);
    for i in 0..n {
        let m = mutate(&mut rng, seed_bytes, text);
        match catch_unwind(AssertUnwindSafe(|| f(&m))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => {
                panics += 1;
                let dump = std::env::temp_dir().join(format!("proxyless-panic-{name}-{i}"));
                let _ = std::fs::write(&dump, &m);
                eprintln!("{name}: mutant {i} panicked (saved to {})", dump.display());
            }
        }
    }
    eprintln!(
        "{name}: {n} mutants, {ok} accepted, {} refused, {panics} panics",
        n - ok - panics
    );
    (n, ok, panics)
}

#[test]
fn mutated_files_give_errors_not_panics() {
    let gpu = gpu();
    let dir = std::env::temp_dir().join(format!("proxyless-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut results = Vec::new();

    // Net configs: parse, then build on the device and count MACs.
    let config = std::fs::read(repo("data/nets/tiny.config")).unwrap();
    results.push(fuzz("net config", &config, 3000, true, |m| {
        let Ok(text) = std::str::from_utf8(m) else {
            return false;
        };
        match NetConfig::parse(text) {
            Ok(c) => Network::new(gpu, &c, 0).is_ok_and(|n| {
                let macs: u64 = n.layers(16).iter().map(|r| r.macs).sum();
                let tape = proxyless::autograd::Tape::new(gpu, 0);
                let x = gpu.upload(&vec![0.5f32; 16 * 16 * 3], &[1, 16, 16, 3]);
                macs > 0 && x.is_ok_and(|x| n.forward(&tape, &tape.constant(x), false).is_ok())
            }),
            Err(_) => false,
        }
    }));

    // Latency tables.
    let yaml = "Conv-input:32x32x3-output:32x32x8:\n  count: 5\n  mean: 0.25\n  var: 0.001\n\
                expanded_conv-input:32x32x8-output:32x32x8-expand:1-kernel:3-stride:1-idskip:0:\n  \
                count: 5\n  mean: 1.5\n  var: 0.01\n";
    results.push(fuzz("latency table", yaml.as_bytes(), 3000, true, |m| {
        let Ok(text) = std::str::from_utf8(m) else {
            return false;
        };
        LatencyTable::parse(text, "mutant").is_ok()
    }));

    // Safetensors.
    let tiny = Network::new(
        gpu,
        &NetConfig::load(&repo("data/nets/tiny.config")).unwrap(),
        0,
    )
    .unwrap();
    let st = dir.join("w.safetensors");
    proxyless::train::save_weights(gpu, &tiny, &st, Some(proxyless::data::Normalize::CIFAR10))
        .unwrap();
    let weights = std::fs::read(&st).unwrap();
    // The header is JSON in the first bytes: most mutants change it and keep the data.
    let head = weights[..600.min(weights.len())].to_vec();
    let tail = weights[head.len()..].to_vec();
    let mutant_file = dir.join("m.safetensors");
    let mut load = |bytes: &[u8]| {
        std::fs::write(&mutant_file, bytes).unwrap();
        load_safetensors(&mutant_file).is_ok_and(|(t, _)| {
            !t.is_empty() && proxyless::train::load_weights(gpu, &tiny, &mutant_file).is_ok()
        })
    };
    results.push(fuzz("safetensors header", &head, 1500, true, |h| {
        load(&[h, &tail[..]].concat())
    }));
    results.push(fuzz("safetensors file", &weights, 500, false, &mut load));

    // CIFAR-10 records: a test batch of 4 records and a class-name file.
    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    let mut records = Vec::new();
    for r in 0..4u8 {
        records.push(r * 2);
        records.extend((0..3072).map(|i| (i as u8).wrapping_mul(r + 1)));
    }
    let names = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    let test_batch = cifar.join("test_batch.bin");
    let meta = cifar.join("batches.meta.txt");
    std::fs::write(&meta, names).unwrap();
    results.push(fuzz("cifar records", &records, 500, false, |m| {
        std::fs::write(&test_batch, m).unwrap();
        load_cifar(&cifar, CifarSplit::Test).is_ok()
    }));
    std::fs::write(&test_batch, &records).unwrap();
    results.push(fuzz("cifar class names", names, 500, true, |m| {
        std::fs::write(&meta, m).unwrap();
        load_cifar(&cifar, CifarSplit::Test).is_ok()
    }));

    // Image files: a PNG and a JPEG in a two-class folder, mutated in turn.
    let folder = dir.join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
    }
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 90]));
    let png = folder.join("a/0.png");
    let jpg = folder.join("b/0.jpg");
    img.save(&png).unwrap();
    img.save(&jpg).unwrap();
    for (name, path) in [("png", &png), ("jpeg", &jpg)] {
        let good = std::fs::read(path).unwrap();
        results.push(fuzz(name, &good, 400, false, |m| {
            std::fs::write(path, m).unwrap();
            load_image_folder(&folder, 8).is_ok()
        }));
        std::fs::write(path, &good).unwrap();
    }

    let _ = std::fs::remove_dir_all(&dir);
    let total: usize = results.iter().map(|r| r.0).sum();
    let panics: usize = results.iter().map(|r| r.2).sum();
    eprintln!("{total} mutated inputs, {panics} panics");
    assert_eq!(
        panics, 0,
        "a parser panicked on a mutated input (see above)"
    );
    // Mutants are not all refused: the test reaches past the first check.
    assert!(results.iter().take(2).all(|r| r.1 > 0), "{results:?}");
}
