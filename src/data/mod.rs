//! Datasets: CIFAR-10 binary, image folders, the built-in synthetic set; augmentation and
//! batching on a background thread. Pure CPU code: nothing here touches the GPU, so the loader
//! thread can run while the device works on the previous batch.

mod augment;
mod cifar;
mod folder;
mod loader;
mod normalize;
mod rng;
mod split;
mod synthetic;

use std::path::Path;

use anyhow::{bail, Result};

pub use augment::{crop_flip_into, resized_crop_flip_into, Augment};
pub use cifar::{is_cifar_dir, load_cifar, CIFAR_RECORD};
pub use folder::{has_class_folders, load_image_folder};
pub use loader::{Batch, Loader, Shard};
pub use normalize::{Normalize, NormalizeChoice};
pub use split::{split, Split};
pub use synthetic::synthetic;

/// Images kept as u8 NHWC (RGB): a quarter of the memory of f32, and the loader thread
/// converts each batch as it is drawn.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// `len() * height * width * 3` bytes, image after image, rows top to bottom, RGB per pixel.
    pub images: Vec<u8>,
    /// One class index per image, below `class_names.len()`.
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes of one image (`height * width * 3`).
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * 3
    }

    /// Image `i` as `height * width * 3` bytes, NHWC.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }
}

/// Which part of a data directory to read. CIFAR names its files by it; an image-folder
/// directory may have `train/` and `test/` (or `val/`) sub-directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarSplit {
    Train,
    Test,
}

/// Reads `dir` whatever it holds, so the CLI has one entry point for `--data DIR`:
/// - CIFAR-10 binary files (see [`is_cifar_dir`]): read with [`load_cifar`]; `size` is ignored
///   (the images stay 32x32);
/// - `train/` plus `test/` or `val/` sub-directories, each of class folders: the one for
///   `split`, read with [`load_image_folder`]; both must have the same classes;
/// - class folders directly: that is the training set; asking it for `Test` is an error, since
///   there is nothing held out to give (hold out part of it with [`split`] instead).
pub fn load(dir: &Path, split: CifarSplit, size: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist or is not a directory: give --data a CIFAR-10 \
             binary directory or an image folder (DIR/<class>/*.png|jpg)",
            dir.display()
        );
    }
    if is_cifar_dir(dir) {
        return load_cifar(dir, split);
    }
    let train = dir.join("train");
    let held_out = ["test", "val"]
        .iter()
        .map(|s| dir.join(s))
        .find(|p| p.is_dir());
    if let (true, Some(held_out)) = (train.is_dir(), held_out) {
        let data = match split {
            CifarSplit::Train => load_image_folder(&train, size)?,
            CifarSplit::Test => load_image_folder(&held_out, size)?,
        };
        let other = match split {
            CifarSplit::Train => &held_out,
            CifarSplit::Test => &train,
        };
        let other_classes = folder::class_dirs(other)?;
        if other_classes != data.class_names {
            bail!(
                "{} and {} have different class folders ({:?} vs {:?}): labels would not \
                 match between training and testing; give both the same class folders",
                train.display(),
                held_out.display(),
                folder::class_dirs(&train)?,
                folder::class_dirs(&held_out)?
            );
        }
        return Ok(data);
    }
    if has_class_folders(dir) {
        return match split {
            CifarSplit::Train => load_image_folder(dir, size),
            CifarSplit::Test => bail!(
                "{} is a single image folder with no test/ or val/ part: lay it out as \
                 DIR/train/<class>/ and DIR/test/<class>/ to evaluate on held-out images",
                dir.display()
            ),
        };
    }
    bail!(
        "{} is neither a CIFAR-10 binary directory (data_batch_1.bin ... or test_batch.bin) nor \
         an image folder (one sub-directory of images per class)",
        dir.display()
    )
}
