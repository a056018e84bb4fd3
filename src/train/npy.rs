//! NumPy's `.npy` format (version 1.0, as documented in numpy's `numpy.lib.format`): the
//! magic `\x93NUMPY`, the version, a little-endian u16 header length, a Python dict literal
//! giving dtype, order and shape, padded with spaces and a newline so that the data starts at
//! a multiple of 64 bytes, then the data in C order.

use std::path::Path;

use anyhow::{bail, Result};

/// Writes `data` as a little-endian f32 array of `shape`, atomically.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        bail!(
            "{}: shape {shape:?} does not hold {} values",
            path.display(),
            data.len()
        );
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // A one-element tuple needs its trailing comma in Python.
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::nn::params::write_atomic(path, &bytes)
}
