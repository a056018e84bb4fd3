//! Image folders (`DIR/<class>/*.png|jpg|jpeg`): every image decoded once at load, made RGB and
//! square, so training reads bytes and never decodes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;

use super::Dataset;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Sub-directory names of `dir`, sorted (hidden ones skipped): the classes, label = position.
pub(crate) fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries =
        fs::read_dir(dir).with_context(|| format!("listing image folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing image folder {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_hidden(&name) && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `dir` has at least one (non-hidden) sub-directory, i.e. could be an image folder.
pub fn has_class_folders(dir: &Path) -> bool {
    class_dirs(dir).map(|c| !c.is_empty()).unwrap_or(false)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Image files of one class folder, sorted by name so the order (and so every seeded shuffle)
/// is the same on every file system.
fn image_files(class_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = fs::read_dir(class_dir)
        .with_context(|| format!("listing class folder {}", class_dir.display()))?;
    for entry in entries {
        let entry =
            entry.with_context(|| format!("listing class folder {}", class_dir.display()))?;
        let path = entry.path();
        let hidden = is_hidden(&entry.file_name().to_string_lossy());
        if !hidden && path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Shorter side scaled to `size` (triangle filter, which averages when shrinking), then the
/// centre `size x size` square: keeps the aspect ratio, like the usual ImageNet evaluation crop.
fn square(img: RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            size,
            ((h as u64 * size as u64 + w as u64 / 2) / w as u64).max(size as u64) as u32,
        )
    } else {
        (
            ((w as u64 * size as u64 + h as u64 / 2) / h as u64).max(size as u64) as u32,
            size,
        )
    };
    let scaled = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    let (x, y) = ((nw - size) / 2, (nh - size) / 2);
    image::imageops::crop_imm(&scaled, x, y, size, size).to_image()
}

fn decode(path: &Path, size: u32) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading image {}", path.display()))?
        .decode()
        .with_context(|| {
            format!(
                "image {} does not decode (damaged, or not PNG/JPEG): remove or replace it",
                path.display()
            )
        })?;
    if img.width() == 0 || img.height() == 0 {
        bail!("image {} has no pixels: remove it", path.display());
    }
    Ok(square(img.to_rgb8(), size).into_raw())
}

/// Every image under `dir/<class>/`, classes sorted by folder name (label = position), images
/// sorted by file name within a class, each resized so its shorter side is `size` and then
/// centre-cropped to `size x size`. Files that are not .png/.jpg/.jpeg are skipped; an image
/// that does not decode is an error. Decoding runs on all cores.
pub fn load_image_folder(dir: &Path, size: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!(
            "image folder {} does not exist or is not a directory",
            dir.display()
        );
    }
    if size == 0 || size > 4096 {
        bail!(
            "image size {size} for {} is out of range 1..=4096",
            dir.display()
        );
    }
    let classes = class_dirs(dir)?;
    if classes.is_empty() {
        let empty = fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let what = if empty {
            "is empty"
        } else {
            "has no class folders"
        };
        bail!(
            "image folder {} {what}: put each class's images in its own sub-directory, \
             DIR/<class>/*.png|jpg",
            dir.display()
        );
    }
    if classes.len() > 256 {
        bail!(
            "image folder {} has {} class folders; at most 256 classes are supported",
            dir.display(),
            classes.len()
        );
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let found = image_files(&class_dir)?;
        if found.is_empty() {
            bail!(
                "class folder {} has no images (.png, .jpg or .jpeg): add some or remove the \
                 folder",
                class_dir.display()
            );
        }
        labels.extend(std::iter::repeat_n(label as u8, found.len()));
        files.extend(found);
    }
    let images = decode_all(&files, size as u32)?;
    Ok(Dataset {
        images,
        labels,
        height: size,
        width: size,
        class_names: classes,
    })
}

/// Decodes `files` in order, split into one contiguous run per core.
fn decode_all(files: &[PathBuf], size: u32) -> Result<Vec<u8>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len())
        .max(1);
    let per = files.len().div_ceil(threads);
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(chunk.len() * (size * size * 3) as usize);
                    for f in chunk {
                        out.extend(decode(f, size)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let mut images = Vec::with_capacity(files.len() * (size * size * 3) as usize);
    for p in parts {
        images.extend(p?);
    }
    Ok(images)
}
