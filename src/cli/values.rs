//! Value parsers for numeric flags: a bad number is refused by clap before anything runs, with
//! the flag's name and the accepted range (exit code 2), rather than panicking deep inside or
//! running with NaN.

use clap::builder::RangedU64ValueParser;

/// The largest batch, epoch or image count a flag takes: far above any use, far below an
/// allocation that could overflow.
pub const MAX_COUNT: u64 = 1 << 24;

/// An integer in `lo..=hi`.
pub fn count(lo: u64, hi: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(lo..=hi)
}

/// A finite real in `lo..=hi` (or `lo < v` when `open_low`).
pub fn real(
    lo: f64,
    hi: f64,
    open_low: bool,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        let low_ok = if open_low { v > lo } else { v >= lo };
        if !v.is_finite() || !low_ok || v > hi {
            let open = if open_low { "(" } else { "[" };
            return Err(format!("{s} is not in {open}{lo}, {hi}]"));
        }
        Ok(v)
    }
}

/// [`real`] for f32 flags.
pub fn real32(
    lo: f64,
    hi: f64,
    open_low: bool,
) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    let parse = real(lo, hi, open_low);
    move |s: &str| parse(s).map(|v| v as f32)
}
