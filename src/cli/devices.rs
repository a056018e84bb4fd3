//! `proxyless devices`: every adapter with the limits that matter to this engine.

use anyhow::{bail, Result};

use proxyless::gpu::describe_adapters;

pub fn run() -> Result<()> {
    let adapters = describe_adapters();
    if adapters.is_empty() {
        bail!(
            "no Vulkan/Metal/DX12 adapter found; on Linux without a GPU install mesa-vulkan-drivers"
        );
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("[{i}] {}", a.name);
        println!(
            "    backend {}, type {}, driver {}",
            a.backend, a.device_type, a.driver
        );
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, workgroup memory {} KiB, \
             {} invocations/workgroup, {} workgroups/dimension",
            a.max_storage_binding_mib,
            a.max_buffer_mib,
            a.max_workgroup_storage_kib,
            a.max_invocations_per_workgroup,
            a.max_workgroups_per_dim
        );
        println!(
            "    timestamp queries {}, shader f16 {}, subgroups {}",
            yes(a.timestamps),
            yes(a.shader_f16),
            yes(a.subgroups)
        );
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
