//! Global average pooling against the reference: batch 1, one channel, odd spatial sizes,
//! channel counts off a multiple of 4 (scalar instance) and those of the real network (vec4).

use anyhow::Result;

use super::{f64s, Checker};
use crate::{ops, reference};

const SHAPES: &[[usize; 4]] = &[
    [1, 1, 1, 1],
    [1, 1, 1, 4],
    [2, 3, 5, 7],
    [5, 2, 3, 6],
    [3, 7, 7, 1],
    [1, 7, 7, 1280],
    [8, 7, 7, 1280],
    [3, 4, 4, 1152],
    [2, 5, 5, 320],
    [4, 14, 14, 96],
    [1, 28, 28, 40],
    [2, 1, 1, 16],
];

pub fn run(c: &mut Checker) -> Result<()> {
    for &xs in SHAPES {
        let [n, _, _, ch] = xs;
        let xv = c.random(xs.iter().product());
        let dyv = c.random(n * ch);
        let x = c.upload(&xv, &xs)?;
        let dy = c.upload(&dyv, &[n, ch])?;
        let name = format!("x{xs:?}");
        let y = ops::pool::global_avg_pool_forward(c.gpu, &x)?;
        let dx = ops::pool::global_avg_pool_backward(c.gpu, &dy, &xs)?;
        let y_ref = reference::global_avg_pool_forward(&f64s(&xv), xs);
        let dx_ref = reference::global_avg_pool_backward(&f64s(&dyv), xs);
        c.compare("global_avg_pool", name.clone(), "y", &y, &y_ref)?;
        c.compare("global_avg_pool", name, "dx", &dx, &dx_ref)?;
    }
    Ok(())
}
