//! Size-bucketed buffer pool. Freed buffers go back to a free list keyed by bucket size and are
//! handed out again, so a training step allocates nothing once warm. Live bytes (bucket sizes of
//! buffers handed out, plus the operand textures of `gpu::texture`) and their high-water mark
//! are counted for the memory benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::alias::{Aliaser, ROW_BYTES};
use super::texture::GpuTexture;

/// Counters of the pool, in bytes of device memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of buffers and operand textures currently handed out.
    pub live_bytes: u64,
    /// The operand textures' part of `live_bytes`.
    pub texture_bytes: u64,
    /// Highest `live_bytes` seen since the last `reset_high_water`.
    pub high_water_bytes: u64,
    /// Bytes of all buffers the pool owns (handed out or free).
    pub allocated_bytes: u64,
    /// Number of device allocations made so far.
    pub allocations: u64,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<Block>>,
    stats: PoolStats,
}

/// The pool itself; shared by every buffer it hands out so a dropped buffer can return.
pub(crate) struct Pool {
    device: wgpu::Device,
    state: Mutex<PoolState>,
    /// Makes buffers that a texture aliases, where the adapter allows (`gpu::alias`).
    aliaser: Option<Aliaser>,
}

/// One device allocation of the pool: a buffer and, for buffers of whole texture rows on an
/// adapter that allows it, the texture sharing its memory (`gpu::alias`).
pub(crate) struct Block {
    buffer: wgpu::Buffer,
    alias: Option<(wgpu::Texture, wgpu::TextureView, u32)>,
}

/// A block on loan. It goes back to the pool when its last holder drops: the `GpuBuffer`, or
/// an aliasing texture of it (`GpuBuffer::alias_texture`) that a kernel still has to read.
pub(crate) struct Loan {
    block: Option<Block>,
    bucket: u64,
    pool: Arc<Pool>,
}

impl Loan {
    fn block(&self) -> &Block {
        self.block.as_ref().expect("block present until drop")
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.pool.release(b, self.bucket);
        }
    }
}

/// Rounds a request up to its bucket: powers of two below 64 KiB, above that steps of 1/8 of the
/// power of two below (at most 12.5% waste), always a multiple of 256 bytes.
pub(crate) fn bucket_size(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    if bytes <= 65536 {
        return bytes.next_power_of_two();
    }
    let high = 1u64 << (63 - bytes.leading_zeros());
    let step = high / 8;
    bytes.div_ceil(step) * step
}

impl Pool {
    pub(crate) fn new(device: wgpu::Device, aliaser: Option<Aliaser>) -> Arc<Pool> {
        Arc::new(Pool {
            device,
            state: Mutex::new(PoolState::default()),
            aliaser,
        })
    }

    /// Whether buffers of whole texture rows come with an aliasing texture.
    pub(crate) fn aliases(&self) -> bool {
        self.aliaser.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic elsewhere while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn acquire(self: &Arc<Self>, bytes: u64) -> GpuBuffer {
        let mut bucket = bucket_size(bytes);
        if self.aliaser.is_some() && bucket > ROW_BYTES {
            // Whole texture rows, so that a texture can alias it (only 72, 88, 104 and 120
            // KiB buckets change, by 8 KiB).
            bucket = bucket.next_multiple_of(ROW_BYTES);
        }
        GpuBuffer {
            buffer: Mutex::new(Some(self.loan(bucket))),
            bucket,
            bytes,
            pool: Arc::clone(self),
            texture: Mutex::new(None),
        }
    }

    /// A block of exactly `bucket` bytes on loan, counted live.
    fn loan(self: &Arc<Self>, bucket: u64) -> Arc<Loan> {
        Arc::new(Loan {
            block: Some(self.acquire_bucket(bucket)),
            bucket,
            pool: Arc::clone(self),
        })
    }

    fn acquire_bucket(&self, bucket: u64) -> Block {
        let mut st = self.lock();
        let reused = st.free.get_mut(&bucket).and_then(|v| v.pop());
        let block = match reused {
            Some(b) => b,
            None => {
                st.stats.allocated_bytes += bucket;
                st.stats.allocations += 1;
                self.create(bucket)
            }
        };
        st.stats.live_bytes += bucket;
        st.stats.high_water_bytes = st.stats.high_water_bytes.max(st.stats.live_bytes);
        block
    }

    /// A new block: aliased where the bucket is whole texture rows and the adapter allows it
    /// (a failure there falls back to a plain buffer; the kernels then read texture copies).
    fn create(&self, bucket: u64) -> Block {
        let aliased = self
            .aliaser
            .as_ref()
            .filter(|_| bucket.is_multiple_of(ROW_BYTES))
            .and_then(|a| a.make((bucket / ROW_BYTES) as u32).ok());
        match aliased {
            Some(a) => Block {
                buffer: a.buffer,
                alias: Some((a.texture, a.view, a.rows)),
            },
            None => Block {
                buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pool"),
                    size: bucket,
                    usage: Aliaser::buffer_usages(),
                    mapped_at_creation: false,
                }),
                alias: None,
            },
        }
    }

    /// Counts an operand texture handed out (`live` true) or returned.
    pub(crate) fn note_texture(&self, bytes: u64, live: bool) {
        let mut st = self.lock();
        if live {
            st.stats.live_bytes += bytes;
            st.stats.texture_bytes += bytes;
            st.stats.high_water_bytes = st.stats.high_water_bytes.max(st.stats.live_bytes);
        } else {
            st.stats.live_bytes -= bytes;
            st.stats.texture_bytes -= bytes;
        }
    }

    fn release(&self, block: Block, bucket: u64) {
        let mut st = self.lock();
        st.stats.live_bytes -= bucket;
        st.free.entry(bucket).or_default().push(block);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    pub(crate) fn reset_high_water(&self) {
        let mut st = self.lock();
        st.stats.high_water_bytes = st.stats.live_bytes;
    }

    /// Gives every free buffer back to the device.
    pub(crate) fn trim(&self) {
        let mut st = self.lock();
        let freed: u64 = st
            .free
            .iter()
            .map(|(bucket, v)| bucket * v.len() as u64)
            .sum();
        st.free.clear();
        st.stats.allocated_bytes -= freed;
    }
}

/// A device buffer on loan from the pool; returns to it when dropped.
pub struct GpuBuffer {
    /// None while the data lives only in the kept texture copy (`Gpu::keep_only_texture`);
    /// `Gpu` brings it back (a texture-to-buffer copy) before any command uses the buffer.
    buffer: Mutex<Option<Arc<Loan>>>,
    bucket: u64,
    bytes: u64,
    pool: Arc<Pool>,
    /// The texture copy last made of this buffer (`Gpu::to_texture`) and the floats it holds,
    /// kept until a command writes the buffer: a tensor that several kernels read through
    /// textures (forward and backward, input and weight gradients) is copied once.
    texture: Mutex<Option<(usize, Arc<GpuTexture>)>>,
}

impl GpuBuffer {
    /// The wgpu buffer (its size is the bucket, at least `bytes()`), or None while only the
    /// kept texture holds the data. Only `Gpu` uses it: it restores a released buffer first.
    pub(crate) fn resident(&self) -> Option<wgpu::Buffer> {
        self.loan().map(|l| l.block().buffer.clone())
    }

    fn loan(&self) -> Option<Arc<Loan>> {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The texture that shares this buffer's memory (`gpu::alias`), if it has one covering
    /// `floats` elements: a view of the data as it is when a kernel reads it, not a copy.
    /// It keeps the memory from going back to the pool while it lives.
    pub(crate) fn alias_texture(&self, floats: usize) -> Option<GpuTexture> {
        let loan = self.loan()?;
        let (texture, view, rows) = loan.block().alias.as_ref()?;
        if (floats as u64).div_ceil(4) > *rows as u64 * super::texture::TEX_WIDTH as u64 {
            return None;
        }
        Some(GpuTexture::aliasing(
            texture.clone(),
            view.clone(),
            Arc::clone(&loan),
        ))
    }

    /// The memory this buffer holds now (for telling whether a texture aliases it).
    pub(crate) fn loan_id(&self) -> Option<*const Loan> {
        self.loan().map(|l| Arc::as_ptr(&l))
    }

    /// Bytes requested: what kernels bind and read back.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of device memory the buffer takes when resident (its pool bucket).
    pub fn device_bytes(&self) -> u64 {
        self.bucket
    }

    fn texture_slot(&self) -> std::sync::MutexGuard<'_, Option<(usize, Arc<GpuTexture>)>> {
        self.texture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept texture copy of the first `floats` elements, if the buffer has not been
    /// written since it was made.
    pub(crate) fn kept_texture(&self, floats: usize) -> Option<Arc<GpuTexture>> {
        match &*self.texture_slot() {
            Some((f, t)) if *f == floats => Some(Arc::clone(t)),
            _ => None,
        }
    }

    /// The kept texture copy and the floats it holds, whatever their number.
    pub(crate) fn any_kept_texture(&self) -> Option<(usize, Arc<GpuTexture>)> {
        self.texture_slot().clone()
    }

    pub(crate) fn keep_texture(&self, floats: usize, texture: &Arc<GpuTexture>) {
        *self.texture_slot() = Some((floats, Arc::clone(texture)));
    }

    /// Drops the kept texture copy: for every command that writes the buffer, once the
    /// buffer is resident (`Gpu` restores it first, else the data would be lost).
    pub(crate) fn forget_texture(&self) {
        debug_assert!(self.resident().is_some(), "forgetting the only copy");
        self.texture_slot().take();
    }

    /// Gives the device buffer back to the pool, leaving the kept texture as the only copy
    /// (which the caller has checked holds all `bytes()`).
    pub(crate) fn release_buffer(&self) {
        // The loan goes back to the pool once no aliasing texture holds it either.
        drop(self.buffer.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// A fresh buffer of this one's bucket for a released one; the caller fills it.
    pub(crate) fn reacquire(&self) -> wgpu::Buffer {
        let loan = self.pool.loan(self.bucket);
        let raw = loan.block().buffer.clone();
        *self.buffer.lock().unwrap_or_else(|e| e.into_inner()) = Some(loan);
        raw
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_size;

    #[test]
    fn buckets_cover_the_request_with_little_waste() {
        for bytes in [
            1u64,
            255,
            256,
            4000,
            65536,
            65537,
            1 << 20,
            3_000_001,
            123_456_789,
        ] {
            let b = bucket_size(bytes);
            assert!(b >= bytes && b.is_multiple_of(256), "{bytes} -> {b}");
            if bytes > 65536 {
                assert!((b as f64) <= bytes as f64 * 1.125 + 1.0, "{bytes} -> {b}");
            }
        }
    }
}
