//! The search's PNG plots, drawn with `plotters` into a buffer (then written with `image`),
//! in a bundled font (DejaVu Sans Mono, `data/fonts/`, its licence beside it) so that nothing
//! is needed from the system:
//! - `arch_probs.png`: one panel per mixed layer (titled with its index and shapes), each op's
//!   probability against the epoch, one legend naming the ops in the official colours;
//! - `curves.png`: training loss, and training and validation accuracy, against the epoch;
//! - `latency.png`: the expected latency (or cost) against the epoch, with the target.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::prelude::*;

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

/// The op names in the order of [`OP_COLOURS`].
pub const OP_NAMES: [&str; 7] = [
    "3x3_MBConv3",
    "3x3_MBConv6",
    "5x5_MBConv3",
    "5x5_MBConv6",
    "7x7_MBConv3",
    "7x7_MBConv6",
    "Zero",
];

const FONT: &str = "sans-serif";

/// Registers the bundled font with plotters, once.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("../../data/fonts/DejaVuSansMono.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
    });
    if !ok {
        return Err(anyhow!(
            "the bundled font data/fonts/DejaVuSansMono.ttf did not load"
        ));
    }
    Ok(())
}

fn colour(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Draws into a white `w` x `h` picture with `draw`, then writes it as PNG.
fn png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    font()?;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    image::RgbImage::from_raw(w, h, buf)
        .context("plot buffer size")?
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Epoch numbers 1..=n against `values` (NaNs left out).
fn points(values: &[f64]) -> Vec<(i32, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as i32 + 1, *v))
        .collect()
}

/// Epochs 1..=n on an integer axis (ticks on whole epochs).
fn x_range(n: usize) -> std::ops::Range<i32> {
    1..(n.max(2) as i32)
}

/// One panel per mixed layer: `history[epoch][layer][op]`, `ops[layer][op]` naming each
/// candidate (as in [`OP_NAMES`]), `titles[layer]` its shapes.
pub fn plot_arch_history(
    path: &Path,
    history: &[Vec<Vec<f64>>],
    ops: &[Vec<String>],
    titles: &[String],
) -> Result<()> {
    let layers = history.first().map_or(0, |h| h.len());
    let cols = 4usize;
    let rows = layers.div_ceil(cols).max(1);
    let (pw, ph, legend) = (300u32, 190u32, 70u32);
    let size = (cols as u32 * pw, rows as u32 * ph + legend);
    png(path, size, |root| {
        let (top, grid) = root.split_vertically(legend);
        top.draw(&Text::new(
            "Architecture probabilities per mixed layer (x: epoch, y: probability)",
            (10, 8),
            (FONT, 18).into_font(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
        for (k, name) in OP_NAMES.iter().enumerate() {
            let (x, y) = (10 + (k as i32 % 4) * 260, 34 + (k as i32 / 4) * 18);
            top.draw(&Rectangle::new(
                [(x, y + 3), (x + 24, y + 11)],
                colour(OP_COLOURS[k]).filled(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
            top.draw(&Text::new(*name, (x + 30, y), (FONT, 14).into_font()))
                .map_err(|e| anyhow!("{e}"))?;
        }
        let panels = grid.split_evenly((rows, cols));
        for (l, area) in panels.iter().enumerate().take(layers) {
            let title = titles
                .get(l)
                .map_or(format!("layer {l}"), |t| format!("{l}: {t}"));
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 13))
                .margin(6)
                .x_label_area_size(24)
                .y_label_area_size(34)
                .build_cartesian_2d(x_range(history.len()), 0.0..1.0)
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(3)
                .y_label_formatter(&|v| format!("{v:.1}"))
                .label_style((FONT, 11))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (k, _) in history[0][l].iter().enumerate() {
                let name = ops.get(l).and_then(|o| o.get(k)).map(String::as_str);
                let c = OP_NAMES
                    .iter()
                    .position(|n| Some(*n) == name)
                    .unwrap_or(k.min(6));
                let values: Vec<f64> = history.iter().map(|e| e[l][k]).collect();
                chart
                    .draw_series(LineSeries::new(
                        points(&values),
                        colour(OP_COLOURS[c]).stroke_width(2),
                    ))
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        Ok(())
    })
}

/// The charts' type: epochs on an integer axis, values on a real one.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordi32, RangedCoordf64>>;

/// A chart of `caption` over `area`: epochs 1..=n across, `y` up.
fn chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    n: usize,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>> {
    ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(n), y)
        .map_err(|e| anyhow!("{e}"))
}

/// Axes with their descriptions, and the light grid.
fn axes(chart: &mut Chart, y_desc: &str) -> Result<()> {
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// A line of `values` against the epoch, named `label` in the legend.
fn series(chart: &mut Chart, values: &[f64], c: RGBColor, label: &str) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points(values), c.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c));
    Ok(())
}

/// The legend of the named lines, framed, at `at`.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .label_font((FONT, 12))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// Training loss (left axis) and training and validation accuracy (right panel) per epoch.
pub fn plot_curves(
    path: &Path,
    train_loss: &[f64],
    train_acc: &[f64],
    valid_acc: &[f64],
) -> Result<()> {
    let n = train_loss.len().max(valid_acc.len());
    let hi = train_loss
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |a, &b| a.max(b));
    png(path, (960, 380), |root| {
        let (left, right) = root.split_horizontally(480);
        let mut c = chart(&left, "Training loss", n, 0.0..(hi * 1.1).max(1e-6))?;
        axes(&mut c, "loss")?;
        series(&mut c, train_loss, colour(OP_COLOURS[0]), "train loss")?;
        legend(&mut c, SeriesLabelPosition::UpperRight)?;
        let mut c = chart(&right, "Accuracy", n, 0.0..1.0)?;
        axes(&mut c, "accuracy")?;
        series(&mut c, train_acc, colour(OP_COLOURS[0]), "train")?;
        series(&mut c, valid_acc, colour(OP_COLOURS[2]), "valid")?;
        legend(&mut c, SeriesLabelPosition::LowerRight)
    })
}

/// The expected cost per epoch against the target (a horizontal line), in `unit`.
pub fn plot_latency(path: &Path, expected: &[f64], target: Option<f64>, unit: &str) -> Result<()> {
    let n = expected.len();
    let hi = expected
        .iter()
        .chain(target.iter())
        .filter(|v| v.is_finite())
        .fold(0.0f64, |a, &b| a.max(b));
    png(path, (640, 400), |root| {
        let title = "Expected cost of the distribution";
        let mut c = chart(root, title, n, 0.0..(hi * 1.15).max(1e-6))?;
        axes(&mut c, &format!("expected {unit}"))?;
        series(
            &mut c,
            expected,
            colour(OP_COLOURS[0]),
            &format!("expected ({unit})"),
        )?;
        if let Some(t) = target {
            series(
                &mut c,
                &vec![t; n.max(2)],
                RGBColor(214, 39, 40),
                &format!("target {t:.2} {unit}"),
            )?;
        }
        legend(&mut c, SeriesLabelPosition::LowerLeft)
    })
}
