//! Timing on the device: the device's own time for a piece of work (timestamp queries) and
//! medians of synchronised wall-clock runs.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::Gpu;

impl Gpu {
    /// Whether `time_on_device` can use timestamp queries here.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The device's own time for the work `f` records, from its first compute pass's start to
    /// its last one's end (timestamp queries; None where the adapter has none). Copies
    /// recorded between passes count; work before `f` does not (the device is synchronised
    /// first), nor does the host's time between submissions when nothing runs.
    pub fn time_on_device(&self, f: impl FnOnce() -> Result<()>) -> Result<Option<Duration>> {
        if !self.has_timestamps() {
            f()?;
            return Ok(None);
        }
        self.sync()?;
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("time_on_device"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        self.lock_batch().timestamps = Some((set.clone(), false));
        let ran = f();
        let began = {
            let mut b = self.lock_batch();
            let began = b.timestamps.take().is_some_and(|(_, began)| began);
            // A pass still open keeps its end write: submitted below, before the resolve.
            Self::submit_batch(&self.queue, &self.ring, &mut b);
            began
        };
        ran?;
        if !began {
            return Ok(Some(Duration::ZERO));
        }
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.resolve_query_set(&set, 0..2, &resolved, 0);
        enc.copy_buffer_to_buffer(&resolved, 0, &staging, 0, Some(16));
        self.queue.submit([enc.finish()]);
        let ticks: Vec<u64> =
            self.map_staging(&staging, 16, "timestamps", bytemuck::pod_collect_to_vec)?;
        let ns =
            ticks[1].saturating_sub(ticks[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok(Some(Duration::from_nanos(ns as u64)))
    }

    /// Median wall-clock time of `f` over `reps` runs after `warmup`, the device synchronised
    /// before each clock read.
    pub fn time_median(
        &self,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<Duration> {
        for _ in 0..warmup {
            f()?;
        }
        self.sync()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            f()?;
            self.sync()?;
            times.push(t0.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }
}
