//! Training-time augmentation, fused with normalisation: each output value is written once,
//! straight from the u8 image into the f32 batch.

use super::normalize::Normalize;
use super::rng::Rng;

/// Per-channel byte -> f32 lookup (see `Normalize::table`).
pub(crate) type Table = [[f32; 256]; 3];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    /// Normalise only (evaluation).
    None,
    /// Pad `pad` pixels on every side, take a random `h x w` crop, flip left-right with
    /// probability 1/2 (the usual CIFAR recipe). The padding is 0 *after* normalisation, i.e.
    /// the mean colour, not black: the net sees no artificial black border.
    CropFlip { pad: usize },
    /// A random crop of 25%..100% of the area with aspect ratio in [3/4, 4/3] (log-uniform),
    /// resized back to `h x w` by bilinear sampling, then a random flip (the ImageNet recipe,
    /// with the smallest area raised from 8% to 25% for small images). After ten draws that do
    /// not fit, the whole image is used.
    ResizedCropFlip,
}

impl Augment {
    /// Writes the augmented, normalised `h x w x 3` image into `out`.
    pub(crate) fn apply(
        &self,
        src: &[u8],
        h: usize,
        w: usize,
        table: &Table,
        rng: &mut Rng,
        out: &mut [f32],
    ) {
        match *self {
            Augment::None => {
                for (i, (o, &b)) in out.iter_mut().zip(src).enumerate() {
                    *o = table[i % 3][b as usize];
                }
            }
            Augment::CropFlip { pad } => {
                let top = rng.below(2 * pad + 1);
                let left = rng.below(2 * pad + 1);
                let flip = rng.coin();
                crop_flip(src, h, w, pad, top, left, flip, table, out);
            }
            Augment::ResizedCropFlip => {
                let crop = random_crop_box(h, w, rng);
                let flip = rng.coin();
                resized_crop_flip(src, h, w, crop, flip, table, out);
            }
        }
    }
}

/// `[top, left, height, width]` in source pixels, following the recipe of `ResizedCropFlip`.
fn random_crop_box(h: usize, w: usize, rng: &mut Rng) -> [f64; 4] {
    let (hf, wf) = (h as f64, w as f64);
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let area = hf * wf * rng.range(0.25, 1.0);
        let aspect = rng.range(lo, hi).exp();
        let (ch, cw) = ((area / aspect).sqrt(), (area * aspect).sqrt());
        if ch <= hf && cw <= wf {
            let top = rng.range(0.0, hf - ch);
            let left = rng.range(0.0, wf - cw);
            return [top, left, ch, cw];
        }
    }
    [0.0, 0.0, hf, wf]
}

#[allow(clippy::too_many_arguments)]
fn crop_flip(
    src: &[u8],
    h: usize,
    w: usize,
    pad: usize,
    top: usize,
    left: usize,
    flip: bool,
    table: &Table,
    out: &mut [f32],
) {
    for y in 0..h {
        // Row and column in the source; outside it lies the zero padding.
        let sy = (y + top).wrapping_sub(pad);
        for x in 0..w {
            let xo = if flip { w - 1 - x } else { x };
            let sx = (xo + left).wrapping_sub(pad);
            let o = &mut out[(y * w + x) * 3..][..3];
            if sy < h && sx < w {
                let s = &src[(sy * w + sx) * 3..][..3];
                for c in 0..3 {
                    o[c] = table[c][s[c] as usize];
                }
            } else {
                o.fill(0.0);
            }
        }
    }
}

fn resized_crop_flip(
    src: &[u8],
    h: usize,
    w: usize,
    [top, left, ch, cw]: [f64; 4],
    flip: bool,
    table: &Table,
    out: &mut [f32],
) {
    // Output pixel centres mapped into the crop box (the "half-pixel" convention), clamped to
    // the image so the border repeats instead of reading outside.
    let coord = |o: usize, n: usize, start: f64, len: f64| -> (usize, usize, f32) {
        let s = (start + (o as f64 + 0.5) * len / n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(n - 1), (s - i0 as f64) as f32)
    };
    let cols: Vec<(usize, usize, f32)> = (0..w).map(|x| coord(x, w, left, cw)).collect();
    for y in 0..h {
        let (y0, y1, fy) = coord(y, h, top, ch);
        for x in 0..w {
            let xo = if flip { w - 1 - x } else { x };
            let (x0, x1, fx) = cols[xo];
            let at = |yy: usize, xx: usize, c: usize| table[c][src[(yy * w + xx) * 3 + c] as usize];
            let o = &mut out[(y * w + x) * 3..][..3];
            for (c, v) in o.iter_mut().enumerate() {
                let a = at(y0, x0, c) + fx * (at(y0, x1, c) - at(y0, x0, c));
                let b = at(y1, x0, c) + fx * (at(y1, x1, c) - at(y1, x0, c));
                *v = a + fy * (b - a);
            }
        }
    }
}

fn check_sizes(src: &[u8], h: usize, w: usize, out: &[f32]) {
    assert_eq!(src.len(), h * w * 3, "augment: image is not {h}x{w}x3");
    assert_eq!(out.len(), h * w * 3, "augment: output is not {h}x{w}x3");
}

/// `CropFlip` with its draws given: `top`, `left` in `0..=2 * pad` place the crop in the padded
/// image; `flip` mirrors the result left-right. For tests and for callers with their own RNG.
#[allow(clippy::too_many_arguments)]
pub fn crop_flip_into(
    src: &[u8],
    h: usize,
    w: usize,
    pad: usize,
    top: usize,
    left: usize,
    flip: bool,
    norm: &Normalize,
    out: &mut [f32],
) {
    check_sizes(src, h, w, out);
    assert!(
        top <= 2 * pad && left <= 2 * pad,
        "crop_flip_into: offset ({top}, {left}) outside 0..={}",
        2 * pad
    );
    crop_flip(src, h, w, pad, top, left, flip, &norm.table(), out);
}

/// `ResizedCropFlip` with its draws given: the crop box `[top, left, height, width]` in source
/// pixels (fractional allowed) and the flip.
pub fn resized_crop_flip_into(
    src: &[u8],
    h: usize,
    w: usize,
    crop: [f64; 4],
    flip: bool,
    norm: &Normalize,
    out: &mut [f32],
) {
    check_sizes(src, h, w, out);
    resized_crop_flip(src, h, w, crop, flip, &norm.table(), out);
}
