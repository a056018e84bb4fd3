//! Small PNG line plots (no text: colours are documented in the README): the probability of
//! every op of every mixed layer over the epochs, and loss / accuracy curves.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

/// Colours of candidates 0..7 in the official order (3x3_MBConv3, 3x3_MBConv6, 5x5_MBConv3,
/// 5x5_MBConv6, 7x7_MBConv3, 7x7_MBConv6, Zero).
pub const OP_COLOURS: [[u8; 3]; 7] = [
    [31, 119, 180],
    [174, 199, 232],
    [255, 127, 14],
    [255, 187, 120],
    [44, 160, 44],
    [152, 223, 138],
    [120, 120, 120],
];

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (0, 1)] {
            let (px, py) = (x + ox, y + oy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// One panel: a frame, grid lines at quarters, and each series (values in [lo, hi]) as a
/// polyline across the panel's width.
fn panel(
    img: &mut RgbImage,
    origin: (u32, u32),
    size: (u32, u32),
    series: &[(Vec<f64>, [u8; 3])],
    lo: f64,
    hi: f64,
) {
    let (ox, oy) = (origin.0 as i64, origin.1 as i64);
    let (w, h) = (size.0 as i64, size.1 as i64);
    for q in 1..4 {
        let y = oy + h * q / 4;
        line(img, (ox, y), (ox + w, y), GRID);
    }
    line(img, (ox, oy), (ox, oy + h), AXIS);
    line(img, (ox, oy + h), (ox + w, oy + h), AXIS);
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (values, colour) in series {
        let n = values.len();
        let at = |i: usize, v: f64| {
            let x = if n > 1 {
                ox + w * i as i64 / (n as i64 - 1)
            } else {
                ox + w / 2
            };
            let t = ((v - lo) / span).clamp(0.0, 1.0);
            (x, oy + h - (t * h as f64).round() as i64)
        };
        for i in 1..n {
            if values[i - 1].is_finite() && values[i].is_finite() {
                line(
                    img,
                    at(i - 1, values[i - 1]),
                    at(i, values[i]),
                    Rgb(*colour),
                );
            }
        }
    }
}

/// `history[epoch][layer][op]` as a grid of panels (7 per row), probabilities from 0 to 1.
pub fn plot_arch_history(path: &Path, history: &[Vec<Vec<f64>>]) -> Result<()> {
    let layers = history.first().map_or(0, |h| h.len());
    let cols = 7u32;
    let rows = (layers as u32).div_ceil(cols).max(1);
    let (pw, ph, pad) = (160u32, 100u32, 16u32);
    let mut img = RgbImage::from_pixel(cols * (pw + pad) + pad, rows * (ph + pad) + pad, WHITE);
    for l in 0..layers {
        let ops = history[0][l].len();
        let series: Vec<(Vec<f64>, [u8; 3])> = (0..ops)
            .map(|k| {
                let colour = if ops < 7 {
                    OP_COLOURS[k]
                } else {
                    OP_COLOURS[k.min(6)]
                };
                (history.iter().map(|e| e[l][k]).collect(), colour)
            })
            .collect();
        let (c, r) = (l as u32 % cols, l as u32 / cols);
        panel(
            &mut img,
            (pad + c * (pw + pad), pad + r * (ph + pad)),
            (pw, ph),
            &series,
            0.0,
            1.0,
        );
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Two panels side by side: losses (train in blue, valid in orange) and accuracies (same
/// colours) per epoch, each scaled to its own range (accuracy 0 to 1).
pub fn plot_curves(
    path: &Path,
    train_loss: &[f64],
    valid_loss: &[f64],
    train_acc: &[f64],
    valid_acc: &[f64],
) -> Result<()> {
    let (pw, ph, pad) = (360u32, 240u32, 20u32);
    let mut img = RgbImage::from_pixel(2 * (pw + pad) + pad, ph + 2 * pad, WHITE);
    let finite = train_loss
        .iter()
        .chain(valid_loss)
        .filter(|v| v.is_finite());
    let hi = finite.clone().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lo = finite.cloned().fold(f64::INFINITY, f64::min).min(0.0);
    let (blue, orange) = (OP_COLOURS[0], OP_COLOURS[2]);
    panel(
        &mut img,
        (pad, pad),
        (pw, ph),
        &[(train_loss.to_vec(), blue), (valid_loss.to_vec(), orange)],
        lo,
        hi.max(lo + 1e-9),
    );
    panel(
        &mut img,
        (2 * pad + pw, pad),
        (pw, ph),
        &[(train_acc.to_vec(), blue), (valid_acc.to_vec(), orange)],
        0.0,
        1.0,
    );
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
