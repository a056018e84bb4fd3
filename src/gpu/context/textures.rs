//! Buffers and their texture copies (layout in `gpu::texture`): making a copy for the kernels
//! that read through textures, keeping it with the buffer until the buffer is written, handing
//! a buffer back to the pool while its copy lives on, and bringing it back when read again.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::Gpu;
use crate::gpu::pool::GpuBuffer;
use crate::gpu::tensor::Tensor;
use crate::gpu::texture::{GpuTexture, TEX_WIDTH};

/// The copies between a buffer and the texture layout of `gpu::texture` for `floats` floats:
/// (buffer offset, first texture row, texels a row, rows), the full rows then the partial one.
fn texel_rows(floats: usize) -> impl Iterator<Item = (u64, u32, u32, u32)> {
    let texels = floats.div_ceil(4) as u64;
    let (full_rows, tail) = (texels / TEX_WIDTH as u64, texels % TEX_WIDTH as u64);
    let full = (full_rows > 0).then_some((0, 0, TEX_WIDTH, full_rows as u32));
    let last = (tail > 0).then_some((
        full_rows * TEX_WIDTH as u64 * 16,
        full_rows as u32,
        tail as u32,
        1,
    ));
    [full, last].into_iter().flatten()
}

/// The two ends and the extent of one of `texel_rows`' copies, in either direction.
fn texel_copy<'a>(
    buffer: &'a wgpu::Buffer,
    texture: &'a GpuTexture,
    (offset, y, width, height): (u64, u32, u32, u32),
) -> (
    wgpu::TexelCopyTextureInfo<'a>,
    wgpu::TexelCopyBufferInfo<'a>,
    wgpu::Extent3d,
) {
    (
        wgpu::TexelCopyTextureInfo {
            texture: texture.raw(),
            mip_level: 0,
            origin: wgpu::Origin3d { x: 0, y, z: 0 },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset,
                bytes_per_row: Some(TEX_WIDTH * 16),
                rows_per_image: None,
            },
        },
        wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
    )
}

impl Gpu {
    /// A texture copy of the first `floats` elements of `buf` (see `gpu::texture` for the
    /// layout), in order with the batch. The buffer keeps the copy until a command writes it,
    /// and hands the same one out again meanwhile.
    pub fn to_texture(&self, buf: &GpuBuffer, floats: usize) -> Result<Arc<GpuTexture>> {
        self.texture_copy(buf, floats, floats <= self.reuse_textures)
    }

    /// `to_texture` for an op's input that its backward reads again through a texture (the
    /// input of a depthwise or pointwise conv, for the weight gradient): the copy is kept
    /// whatever its size (unless PROXYLESS_TEXTURE_REUSE=off), so the backward finds it if
    /// nothing has written the buffer since. It then costs the texture's memory from the
    /// forward to the backward, or until the buffer is dropped or written.
    pub fn to_texture_for_backward(
        &self,
        buf: &GpuBuffer,
        floats: usize,
    ) -> Result<Arc<GpuTexture>> {
        self.texture_copy(buf, floats, self.reuse_textures > 0)
    }

    fn texture_copy(&self, buf: &GpuBuffer, floats: usize, keep: bool) -> Result<Arc<GpuTexture>> {
        // A buffer that a texture aliases needs no copy (`gpu::alias`).
        if let Some(t) = buf.alias_texture(floats) {
            return Ok(Arc::new(t));
        }
        if let Some(t) = buf.kept_texture(floats) {
            return Ok(t);
        }
        let texels = floats.div_ceil(4) as u64;
        let rows = texels.div_ceil(TEX_WIDTH as u64);
        let max_rows = self.limits.max_texture_dimension_2d as u64;
        let raw = self.buffer(buf);
        if rows > max_rows || texels * 16 > raw.size() {
            bail!(
                "to_texture: {floats} floats need {rows} texture rows (limit {max_rows}) and a \
                 buffer of {} bytes (have {})",
                texels * 16,
                raw.size()
            );
        }
        let tex = self.textures.acquire(rows as u32);
        let timer = self.profile_start()?;
        let mut b = self.lock_batch();
        let enc = b.encoder(&self.device);
        for (offset, y, width, height) in texel_rows(floats) {
            let (t, b, size) = texel_copy(&raw, &tex, (offset, y, width, height));
            enc.copy_buffer_to_texture(b, t, size);
        }
        drop(b);
        self.profile_end(timer, "copy buffer -> texture")?;
        let tex = Arc::new(tex);
        if keep {
            buf.keep_texture(floats, &tex);
        }
        Ok(tex)
    }

    /// Treats `tensors` as rewritten: their kept texture copies (`to_texture`) are dropped.
    /// The benchmarks call it on inputs and weights that training would give fresh each step,
    /// so that they time the copies a step makes.
    pub fn mark_written(&self, tensors: &[&Tensor]) {
        for t in tensors {
            self.buffer(&t.buf);
            t.buf.forget_texture();
        }
    }

    /// Keeps `texture` (a `to_texture` copy of the first `floats` elements of `buf`, all of
    /// them) as the only copy of the data and gives the buffer back to the pool, for a
    /// tensor that is read only through textures from now on (a BN input saved for the
    /// backward): memory is not held twice, and the backward copies nothing. A command that
    /// uses the buffer later brings it back first (`buffer`). Returns whether the buffer went
    /// back (not when the texture holds only part of it).
    pub fn keep_only_texture(
        &self,
        buf: &GpuBuffer,
        floats: usize,
        texture: &Arc<GpuTexture>,
    ) -> bool {
        // An aliasing texture is the buffer's own memory: nothing to give back.
        let whole = floats as u64 * 4 >= buf.bytes() && texture.aliased_loan().is_none();
        if whole {
            buf.keep_texture(floats, texture);
            buf.release_buffer();
        }
        whole
    }

    /// `keep_only_texture` with the copy `buf` keeps of all its `floats` (`to_texture`), if it
    /// keeps one and is still resident; otherwise nothing happens. Returns whether the buffer
    /// went back.
    pub fn keep_only_kept_texture(&self, buf: &GpuBuffer, floats: usize) -> bool {
        match buf.kept_texture(floats) {
            Some(t) if buf.resident().is_some() => self.keep_only_texture(buf, floats, &t),
            _ => false,
        }
    }

    /// The wgpu buffer of `buf`. One released to its texture copy (`keep_only_texture`) is
    /// first brought back by a texture-to-buffer copy, in order with the batch; so call it
    /// before taking the batch lock.
    pub(super) fn buffer(&self, buf: &GpuBuffer) -> wgpu::Buffer {
        if let Some(raw) = buf.resident() {
            return raw;
        }
        let mut b = self.lock_batch();
        if let Some(raw) = buf.resident() {
            return raw; // another thread brought it back meanwhile
        }
        let (floats, tex) = buf
            .any_kept_texture()
            .expect("a released buffer keeps its texture copy (keep_only_texture)");
        let raw = buf.reacquire();
        let enc = b.encoder(&self.device);
        for (offset, y, width, height) in texel_rows(floats) {
            let (t, b, size) = texel_copy(&raw, &tex, (offset, y, width, height));
            enc.copy_texture_to_buffer(t, b, size);
        }
        raw
    }
}
