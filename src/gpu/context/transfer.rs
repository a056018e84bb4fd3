//! Moving data: copies between buffers (recorded in order with the batch), uploads from the
//! host, and readbacks through a kept staging buffer.

use anyhow::{anyhow, bail, Result};

use super::Gpu;
use crate::gpu::pool::GpuBuffer;
use crate::gpu::tensor::Tensor;

impl Gpu {
    /// Copies `src` into `dst` (whole of `src`), in order with the batch.
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer) -> Result<()> {
        if dst.bytes() < src.bytes() {
            bail!(
                "copy: destination of {} bytes is smaller than source of {}",
                dst.bytes(),
                src.bytes()
            );
        }
        let (src_raw, dst_raw) = (self.buffer(src), self.buffer(dst));
        dst.forget_texture();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        enc.copy_buffer_to_buffer(&src_raw, 0, &dst_raw, 0, Some(src.bytes()));
        Ok(())
    }

    /// Reads many small tensors (scalars, per-layer sums) with one readback instead of one each:
    /// they are copied side by side into one buffer, in order with the batch.
    pub fn read_many(&self, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        if total == 0 {
            return Ok(tensors.iter().map(|_| Vec::new()).collect());
        }
        let packed = self.concat(tensors);
        let flat = self.read_f32(&packed)?;
        let mut out = Vec::with_capacity(tensors.len());
        let mut at = 0;
        for t in tensors {
            out.push(flat[at..at + t.numel()].to_vec());
            at += t.numel();
        }
        Ok(out)
    }

    /// The tensors' elements one after the other in a new 1-d tensor (copies in the batch).
    pub fn concat(&self, tensors: &[&Tensor]) -> Tensor {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        let packed = self.empty(&[total]);
        let dst = self.buffer(&packed.buf);
        let sources: Vec<wgpu::Buffer> = tensors.iter().map(|t| self.buffer(&t.buf)).collect();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        let mut offset = 0;
        for (t, src) in tensors.iter().zip(&sources) {
            enc.copy_buffer_to_buffer(src, 0, &dst, offset, Some(t.bytes()));
            offset += t.bytes();
        }
        packed
    }

    /// The inverse of [`Gpu::concat`]: `packed`'s elements back into `tensors`, one after the
    /// other (copies in the batch).
    pub fn scatter(&self, packed: &Tensor, tensors: &[&Tensor]) -> Result<()> {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        if total > packed.numel() {
            bail!(
                "scatter: {total} elements wanted from a tensor of {}",
                packed.numel()
            );
        }
        let src = self.buffer(&packed.buf);
        let targets: Vec<wgpu::Buffer> = tensors
            .iter()
            .map(|t| {
                t.buf.forget_texture();
                self.buffer(&t.buf)
            })
            .collect();
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        let mut offset = 0;
        for (t, dst) in tensors.iter().zip(&targets) {
            enc.copy_buffer_to_buffer(&src, offset, dst, 0, Some(t.bytes()));
            offset += t.bytes();
        }
        Ok(())
    }

    /// Uploads 32-bit words into a new tensor.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if std::mem::size_of::<T>() != 4 || data.len() != n {
            bail!(
                "upload: {} elements of {} bytes do not fill shape {shape:?}",
                data.len(),
                std::mem::size_of::<T>()
            );
        }
        let t = self.empty(shape);
        self.write(&t.buf, data)?;
        Ok(t)
    }

    /// Overwrites a buffer from the host. Submits the batch first: `write_buffer` runs before
    /// the next submission's commands, so without it a recycled buffer could be overwritten
    /// while earlier batched dispatches still read it.
    pub fn write<T: bytemuck::Pod>(&self, buf: &GpuBuffer, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() as u64 > buf.bytes() {
            bail!(
                "write: {} bytes do not fit a buffer of {}",
                bytes.len(),
                buf.bytes()
            );
        }
        let raw = self.buffer(buf);
        self.flush();
        buf.forget_texture();
        if !bytes.is_empty() {
            self.queue.write_buffer(&raw, 0, bytes);
        }
        Ok(())
    }

    /// Reads a buffer back as 32-bit words (synchronises).
    pub fn read<T: bytemuck::Pod>(&self, buf: &GpuBuffer) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.read_into(buf, &mut out)?;
        Ok(out)
    }

    /// Reads a buffer back into `out`, which takes the buffer's 32-bit words (synchronises).
    /// One copy, out of the mapped staging buffer; the staging buffer is kept for the next read
    /// of at most its size and `out` keeps its capacity, so a readback every step allocates
    /// nothing.
    pub fn read_into<T: bytemuck::Pod>(&self, buf: &GpuBuffer, out: &mut Vec<T>) -> Result<()> {
        let bytes = buf.bytes().div_ceil(4) * 4;
        let mut kept = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        let staging = match kept.take() {
            Some(s) if s.size() >= bytes.max(4) => s,
            _ => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes.max(4).next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        {
            let raw = self.buffer(buf);
            let mut b = self.lock_batch();
            let enc = b.encoder(&self.device);
            enc.copy_buffer_to_buffer(&raw, 0, &staging, 0, Some(bytes));
        }
        self.flush();
        self.map_staging(&staging, bytes.max(4), "readback", |view| {
            let view = &view[..bytes as usize];
            out.clear();
            match bytemuck::try_cast_slice::<u8, T>(view) {
                Ok(words) => out.extend_from_slice(words),
                Err(_) => out.extend(bytemuck::pod_collect_to_vec::<u8, T>(view)),
            }
        })?;
        *kept = Some(staging);
        Ok(())
    }

    /// `f` of the first `bytes` of a MAP_READ buffer, once everything submitted has run
    /// (synchronises).
    pub(super) fn map_staging<R>(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        rx.recv()
            .map_err(|_| anyhow!("{what}: map callback never ran"))?
            .map_err(|e| anyhow!("{what}: could not map the buffer: {e}"))?;
        let view = staging
            .get_mapped_range(0..bytes)
            .map_err(|e| anyhow!("{what}: {e}"))?;
        let out = f(&view);
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Reads a tensor back as f32.
    pub fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        self.read_f32_into(t, &mut v)?;
        Ok(v)
    }

    /// [`Gpu::read_f32`] into `out` (see [`Gpu::read_into`]).
    pub fn read_f32_into(&self, t: &Tensor, out: &mut Vec<f32>) -> Result<()> {
        self.read_into(&t.buf, out)?;
        out.truncate(t.numel());
        Ok(())
    }
}
