//! Finding adapters: the wgpu instance (with the CPU driver's thread count set first), the
//! backends asked for, the ranking of adapter types, and the summaries `proxyless devices`
//! prints.

/// One line of `proxyless devices`.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding_mib: u64,
    pub max_buffer_mib: u64,
    pub max_workgroup_storage_kib: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_workgroups_per_dim: u32,
    pub timestamps: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
}

pub(super) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// The `LP_NUM_THREADS` a program should set for Mesa's CPU driver (llvmpipe / lavapipe)
/// before its first adapter, unless the user set one (then None): twice the cores. lavapipe
/// cuts each dispatch's workgroups into one contiguous share per thread and the dispatch ends
/// with its slowest share; with one thread per core, any other runnable thread (ours encoding
/// the next commands, the driver's queue thread copying) delays a share and the other core
/// idles meanwhile. With two per core the scheduler keeps both busy: the training step took
/// 1117-1135 ms against 1366-1627 with one per core (benches/NOTES.md). Other drivers ignore
/// the variable. The library never sets it: changing the environment is only sound before
/// other threads start, which only a program's `main` knows (`proxyless`'s does).
pub fn cpu_driver_threads() -> Option<String> {
    if std::env::var_os("LP_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // llvmpipe caps the count at 16 (LP_MAX_THREADS).
    Some((2 * cores).min(16).to_string())
}

pub(super) fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

pub(super) fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

/// Which adapter (an index into `kinds`: each adapter's type and backend, in enumeration order)
/// the `n`-th rank of a machine opens: one of the adapters of the best type, the n-th modulo
/// their number, all through the backend of the first of them (a GPU that Vulkan and DX12 both
/// list counts once). None without adapters.
pub(super) fn nth_best(kinds: &[(wgpu::DeviceType, wgpu::Backend)], n: usize) -> Option<usize> {
    let best = kinds.iter().map(|k| type_rank(k.0)).max()?;
    let backend = kinds.iter().find(|k| type_rank(k.0) == best)?.1;
    let of_best: Vec<usize> = (0..kinds.len())
        .filter(|&i| type_rank(kinds[i].0) == best && kinds[i].1 == backend)
        .collect();
    Some(of_best[n % of_best.len()])
}

pub(super) const NO_ADAPTER: &str =
    "no Vulkan/Metal/DX12 adapter found; on Linux without a GPU install \
mesa-vulkan-drivers (apt-get install -y mesa-vulkan-drivers)";

/// Every adapter wgpu can see on the enabled backends (`WGPU_BACKEND` honoured).
pub fn describe_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(backends()))
        .iter()
        .map(summarise)
        .collect()
}

fn summarise(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let l = a.limits();
    let f = a.features();
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding_mib: l.max_storage_buffer_binding_size >> 20,
        max_buffer_mib: l.max_buffer_size >> 20,
        max_workgroup_storage_kib: l.max_compute_workgroup_storage_size / 1024,
        max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
        timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_f16: f.contains(wgpu::Features::SHADER_F16),
        subgroups: f.contains(wgpu::Features::SUBGROUP),
    }
}

#[cfg(test)]
mod tests {
    use super::nth_best;
    use wgpu::{Backend, DeviceType};

    #[test]
    fn ranks_of_a_machine_take_its_best_adapters_in_turn() {
        use Backend::{Dx12, Vulkan};
        use DeviceType::{Cpu, DiscreteGpu, IntegratedGpu};
        // Two discrete GPUs, each listed by Vulkan and DX12, an integrated one and lavapipe.
        let kinds = [
            (Cpu, Vulkan),
            (DiscreteGpu, Vulkan),
            (IntegratedGpu, Vulkan),
            (DiscreteGpu, Dx12),
            (DiscreteGpu, Vulkan),
            (DiscreteGpu, Dx12),
        ];
        let picks: Vec<usize> = (0..5).map(|n| nth_best(&kinds, n).unwrap()).collect();
        assert_eq!(picks, vec![1, 4, 1, 4, 1]);
        // A CPU driver alone: every rank shares it.
        assert_eq!(nth_best(&[(Cpu, Vulkan)], 3), Some(0));
        assert_eq!(nth_best(&[], 0), None);
    }
}
