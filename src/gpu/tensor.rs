//! A device tensor: a pooled buffer plus a shape. Elements are 32-bit (f32, or u32 for labels);
//! activations are NHWC.

use super::pool::GpuBuffer;

/// A dense tensor on the device. Shapes are logical; the memory is contiguous row-major.
#[derive(Debug)]
pub struct Tensor {
    pub buf: GpuBuffer,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the elements (not of the pool bucket).
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// Bytes of device memory the tensor's buffer takes (its pool bucket).
    pub fn device_bytes(&self) -> u64 {
        self.buf.device_bytes()
    }

    /// The shape as `[a, b, c]` for error messages.
    pub fn shape_str(&self) -> String {
        format!("{:?}", self.shape)
    }
}
