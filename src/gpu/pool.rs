//! Size-bucketed buffer pool. Freed buffers go back to a free list keyed by bucket size and are
//! handed out again, so a training step allocates nothing once warm. Live bytes (bucket sizes of
//! buffers handed out) and their high-water mark are counted for the memory benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counters of the pool, in bytes of device memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of buffers currently handed out.
    pub live_bytes: u64,
    /// Highest `live_bytes` seen since the last `reset_high_water`.
    pub high_water_bytes: u64,
    /// Bytes of all buffers the pool owns (handed out or free).
    pub allocated_bytes: u64,
    /// Number of device allocations made so far.
    pub allocations: u64,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// The pool itself; shared by every buffer it hands out so a dropped buffer can return.
pub(crate) struct Pool {
    device: wgpu::Device,
    state: Mutex<PoolState>,
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
    pub(crate) fn new(device: wgpu::Device) -> Arc<Pool> {
        Arc::new(Pool {
            device,
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic elsewhere while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn acquire(self: &Arc<Self>, bytes: u64) -> GpuBuffer {
        let bucket = bucket_size(bytes);
        let mut st = self.lock();
        let reused = st.free.get_mut(&bucket).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => b,
            None => {
                st.stats.allocated_bytes += bucket;
                st.stats.allocations += 1;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pool"),
                    size: bucket,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::UNIFORM
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        st.stats.live_bytes += bucket;
        st.stats.high_water_bytes = st.stats.high_water_bytes.max(st.stats.live_bytes);
        GpuBuffer {
            buffer: Some(buffer),
            bucket,
            bytes,
            pool: Arc::clone(self),
        }
    }

    fn release(&self, buffer: wgpu::Buffer, bucket: u64) {
        let mut st = self.lock();
        st.stats.live_bytes -= bucket;
        st.free.entry(bucket).or_default().push(buffer);
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
    buffer: Option<wgpu::Buffer>,
    bucket: u64,
    bytes: u64,
    pool: Arc<Pool>,
}

impl GpuBuffer {
    /// The wgpu buffer (its size is the bucket, at least `bytes()`).
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Bytes requested: what kernels bind and read back.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.release(b, self.bucket);
        }
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
