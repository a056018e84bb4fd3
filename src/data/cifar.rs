//! CIFAR-10, binary version: records of one label byte then the red, green and blue 32x32
//! planes, turned into NHWC on load so every later stage sees one layout.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{CifarSplit, Dataset};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
/// Bytes of one record: the label, then three planes.
pub const CIFAR_RECORD: usize = 1 + 3 * PLANE;

/// Whether `dir` looks like CIFAR-10 binary: one of the files that [`load_cifar`] reads first.
pub fn is_cifar_dir(dir: &Path) -> bool {
    dir.join("data_batch_1.bin").is_file() || dir.join("test_batch.bin").is_file()
}

fn split_files(dir: &Path, split: CifarSplit) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = match split {
        // Whichever of the five are there, in order: a directory with only data_batch_1.bin
        // still makes a (small) training set for quick runs.
        CifarSplit::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .filter(|p| p.is_file())
            .collect(),
        CifarSplit::Test => Some(dir.join("test_batch.bin"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect(),
    };
    if files.is_empty() {
        let want = match split {
            CifarSplit::Train => "data_batch_1.bin ... data_batch_5.bin",
            CifarSplit::Test => "test_batch.bin",
        };
        bail!(
            "{} has no {want}: put the CIFAR-10 binary files (cifar-10-batches-bin) there",
            dir.display()
        );
    }
    Ok(files)
}

/// Class names from `batches.meta.txt` (one a line) when it is there, else "0".."9".
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let meta = dir.join("batches.meta.txt");
    if !meta.is_file() {
        return Ok((0..10).map(|i| i.to_string()).collect());
    }
    let text = fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        bail!(
            "{} names {} classes, CIFAR-10 has 10: fix the file (one name a line) or remove it",
            meta.display(),
            names.len()
        );
    }
    Ok(names)
}

/// Appends the records of one file, planar to NHWC.
fn read_file(path: &Path, data: &mut Dataset) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
        bail!(
            "{} is {} bytes, not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records: the \
             file is truncated or not CIFAR-10 binary; fetch it again",
            path.display(),
            bytes.len()
        );
    }
    let records = bytes.len() / CIFAR_RECORD;
    data.labels.reserve(records);
    let start = data.images.len();
    data.images.resize(start + records * 3 * PLANE, 0);
    let out = &mut data.images[start..];
    for (r, (rec, img)) in bytes
        .chunks_exact(CIFAR_RECORD)
        .zip(out.chunks_exact_mut(3 * PLANE))
        .enumerate()
    {
        let label = rec[0];
        if label > 9 {
            bail!(
                "{}: record {r} has label {label}, CIFAR-10 labels are 0..=9: the file is \
                 damaged or is CIFAR-100 (not supported)",
                path.display()
            );
        }
        data.labels.push(label);
        let (red, rest) = rec[1..].split_at(PLANE);
        let (green, blue) = rest.split_at(PLANE);
        for (p, px) in img.chunks_exact_mut(3).enumerate() {
            px[0] = red[p];
            px[1] = green[p];
            px[2] = blue[p];
        }
    }
    Ok(())
}

/// Every file of `split` in `dir`, concatenated in file order: `data_batch_1.bin` ..
/// `data_batch_5.bin` (those present) for `Train`, `test_batch.bin` for `Test`.
pub fn load_cifar(dir: &Path, split: CifarSplit) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!(
            "CIFAR-10 directory {} does not exist or is not a directory",
            dir.display()
        );
    }
    let files = split_files(dir, split)?;
    let mut data = Dataset {
        height: SIDE,
        width: SIDE,
        class_names: class_names(dir)?,
        ..Dataset::default()
    };
    for f in &files {
        read_file(f, &mut data)?;
    }
    Ok(data)
}
