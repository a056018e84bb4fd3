//! The built-in data set, so `search` and `train` run with no download: colour gratings whose
//! class is their orientation and spatial frequency.
//!
//! Chosen so that only spatial structure tells the classes apart: the two colours, the phase
//! (i.e. position), a lighting ramp and the pixel noise are drawn per image independently of the
//! class, so the mean colour or any single pixel carries no class information, and the mean
//! image of every class is the same. Oriented filters, which any small CNN learns in its first
//! layer, separate the classes: 5 orientations 22.5 degrees apart (drawn within +-3) times 2
//! periods a factor 2 apart (drawn within +-8%).
//!
//! A class holds a grating and its mirror image alike (+-22.5 degrees are one class), so the
//! left-right flip and the shifts of [`Augment::CropFlip`](super::Augment) keep every label
//! right. [`Augment::ResizedCropFlip`](super::Augment) does not: rescaling changes the period.

use std::f64::consts::PI;

use super::rng::Rng;
use super::Dataset;

const ORIENTATIONS: usize = 5;
const CLASSES: usize = 2 * ORIENTATIONS;
/// Standard deviation of the per-pixel noise, in [0, 1] intensity units.
const NOISE: f64 = 0.08;
/// Smallest difference of mean intensity between the two colours: every grating has some
/// luminance contrast, so one luminance filter sees all of them.
const MIN_CONTRAST: f64 = 0.3;

/// Orientations of the classes, in degrees, folded to [0, 90]: mirroring maps `a` to `-a`.
const STEP: f64 = 90.0 / (ORIENTATIONS - 1) as f64;

/// Label -> (orientation in degrees of the wave vector, period in pixels) for images `size`
/// pixels wide; the orientation is drawn as + or - this.
fn class_params(label: usize, size: usize) -> (f64, f64) {
    let angle = (label % ORIENTATIONS) as f64 * STEP;
    let fine = (size as f64 / 4.0).max(2.5);
    let period = if label < ORIENTATIONS {
        fine
    } else {
        (size as f64 / 2.0).max(fine * 1.6)
    };
    (angle, period)
}

fn class_name(label: usize) -> String {
    let angle = (label % ORIENTATIONS) as f64 * STEP;
    let kind = if label < ORIENTATIONS {
        "fine"
    } else {
        "coarse"
    };
    format!("{angle}deg-{kind}")
}

/// Two colours whose mean intensities differ by at least `MIN_CONTRAST`.
fn colours(rng: &mut Rng) -> [[f64; 3]; 2] {
    for _ in 0..64 {
        let a = [rng.unit(), rng.unit(), rng.unit()];
        let b = [rng.unit(), rng.unit(), rng.unit()];
        let mean = |c: &[f64; 3]| (c[0] + c[1] + c[2]) / 3.0;
        if (mean(&a) - mean(&b)).abs() >= MIN_CONTRAST {
            return [a, b];
        }
    }
    [[0.1; 3], [0.9; 3]]
}

fn draw(label: usize, size: usize, rng: &mut Rng, out: &mut [u8]) {
    let (angle, period) = class_params(label, size);
    let sign = if rng.coin() { 1.0 } else { -1.0 };
    let theta = sign * (angle + rng.range(-3.0, 3.0)) * PI / 180.0;
    let k = 2.0 * PI / (period * rng.range(0.92, 1.08));
    let (kx, ky) = (k * theta.cos(), k * theta.sin());
    let phase = rng.range(0.0, 2.0 * PI);
    let [c0, c1] = colours(rng);
    // Lighting: a brightness ramp of up to +-20% across the image, in a random direction.
    let ramp = rng.range(0.0, 0.4);
    let ramp_dir = rng.range(0.0, 2.0 * PI);
    let (gx, gy) = (ramp * ramp_dir.cos(), ramp * ramp_dir.sin());
    let centre = (size as f64 - 1.0) / 2.0;
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f64 - centre, y as f64 - centre);
            let t = 0.5 + 0.5 * (kx * fx + ky * fy + phase).sin();
            let light = 1.0 + (gx * fx + gy * fy) / size as f64;
            let px = &mut out[(y * size + x) * 3..][..3];
            for c in 0..3 {
                let v = (c0[c] + (c1[c] - c0[c]) * t) * light + NOISE * rng.noise();
                px[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// `count` images of `size x size`, label `i % 10` for image `i` (balanced: counts differ by at
/// most one). Image `i` depends only on (seed, i, size), so a larger set extends a smaller one.
///
/// Panics if `size < 8`: below that the fine gratings alias.
pub fn synthetic(seed: u64, count: usize, size: usize) -> Dataset {
    assert!(
        size >= 8,
        "synthetic: images of {size} pixels, need at least 8"
    );
    let per = size * size * 3;
    let mut images = vec![0u8; count * per];
    let labels: Vec<u8> = (0..count).map(|i| (i % CLASSES) as u8).collect();
    // Images are independent, so they are drawn on all cores, a contiguous run each.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (c, part) in images.chunks_mut(chunk * per).enumerate() {
            s.spawn(move || {
                for (k, out) in part.chunks_exact_mut(per).enumerate() {
                    let i = c * chunk + k;
                    let mut rng = Rng::from_parts(&[seed, i as u64, size as u64, 0x5e7]);
                    draw(i % CLASSES, size, &mut rng, out);
                }
            });
        }
    });
    Dataset {
        images,
        labels,
        height: size,
        width: size,
        class_names: (0..CLASSES).map(class_name).collect(),
    }
}
