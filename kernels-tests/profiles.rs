//! The kernel variants other machines run, checked here: `proxyless check` under the `gpu`
//! profile (a CPU adapter taking a discrete GPU's decisions: buffer operands, no aliasing, no
//! storage-texture reads, coalesced lanes) and on wgpu's GL backend (Mesa's llvmpipe GL,
//! without subgroups). Each must pass every case.

fn check(env: &[(&str, &str)], args: &[&str]) -> (String, usize) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_proxyless"));
    cmd.args(args).args(["check", "--seed", "7"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run the proxyless binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?} {env:?}: {stderr}\n{stdout}");
    let passed = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no \"N passed, 0 failed\" line: {stdout}"));
    (format!("{stderr}{stdout}"), passed)
}

#[test]
fn check_passes_under_the_gpu_profile() {
    let (out, passed) = check(&[], &["--profile", "gpu"]);
    assert!(out.contains("profile gpu (GPU decisions"), "{out}");
    assert!(passed >= 1500, "{passed} cases");
    eprintln!("gpu profile: {passed} cases passed");
    // The same through the environment.
    let (out, _) = check(&[("PROXYLESS_PROFILE", "gpu")], &[]);
    assert!(out.contains("profile gpu"), "{out}");
}

#[test]
fn check_passes_on_the_gl_backend() {
    // Mesa's GL driver (libegl-mesa0, libgl1-mesa-dri; `.ci/run` installs them).
    let (out, passed) = check(&[("WGPU_BACKEND", "gl")], &[]);
    assert!(out.contains("(Gl,"), "not the GL backend: {out}");
    assert!(passed >= 1500, "{passed} cases");
    eprintln!("GL backend: {passed} cases passed");
}

/// The tuning is typed and checked: an unknown `PROXYLESS_*` variable or a malformed value is
/// an error listing what is accepted (also from the command line, before anything runs);
/// every knob of the table parses; the `gpu` profile turns a CPU adapter's decisions off.
#[test]
fn tuning_knobs_are_checked_and_documented() {
    use proxyless::gpu::{Profile, Tuning, KNOBS};
    let err = Tuning::from_vars([("PROXYLESS_GEMM_OPERAND", "buffers")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown variable PROXYLESS_GEMM_OPERAND")
            && err.contains("PROXYLESS_GEMM_OPERANDS,"),
        "{err}"
    );
    for (k, v) in [
        ("PROXYLESS_GEMM_OPERANDS", "buffer"),
        ("PROXYLESS_GEMM4_TILE", "6x8"),
        ("PROXYLESS_GEMM_TILE", "4x"),
        ("PROXYLESS_GEMM_LANES_M", "65"),
        ("PROXYLESS_PARALLEL_GROUPS", "0"),
        ("PROXYLESS_ALIAS", "no"),
        ("PROXYLESS_NO_FUSION", "yes"),
        ("PROXYLESS_PROFILE", "cpu"),
        ("PROXYLESS_CONV_FWD_TILE", "9x1"),
    ] {
        let err = Tuning::from_vars([(k, v)]).unwrap_err().to_string();
        let accepted = KNOBS.iter().find(|n| n.0 == k).unwrap().1;
        assert!(err.contains(k) && err.contains(accepted), "{k}={v}: {err}");
    }
    let good = [
        ("PROXYLESS_PROFILE", "gpu"),
        ("PROXYLESS_GEMM_OPERANDS", "storage"),
        ("PROXYLESS_GEMM_SCALAR", "1"),
        ("PROXYLESS_GEMM_TILE", "2x16"),
        ("PROXYLESS_GEMM4_TILE", "8x24"),
        ("PROXYLESS_GEMM_LANES_M", "10"),
        ("PROXYLESS_BN_OPERANDS", "buffers"),
        ("PROXYLESS_CONV_FWD_TILE", "8x8"),
        ("PROXYLESS_CONV_DX_TILE", "4x4"),
        ("PROXYLESS_CONV_DW_TILE", "8x6"),
        ("PROXYLESS_NO_FUSION", "1"),
        ("PROXYLESS_BN_STATS", "separate"),
        ("PROXYLESS_SGD", "per-tensor"),
        ("PROXYLESS_LANES", "coalesced"),
        ("PROXYLESS_TEXTURE_REUSE", "off"),
        ("PROXYLESS_SHADER_CHECKS", "all"),
        ("PROXYLESS_ALIAS", "off"),
        ("PROXYLESS_SUBGROUPS", "off"),
        ("PROXYLESS_PARALLEL_GROUPS", "12"),
        ("PROXYLESS_NO_STORAGE_TEXTURES", "1"),
        ("PROXYLESS_CHURN", "3"),
        ("HOME", "/root"),
    ];
    assert_eq!(
        good.len() - 2,
        KNOBS.len(),
        "a knob of the table is not tried"
    );
    let t = Tuning::from_vars(good).unwrap();
    assert_eq!(t.gemm4_tile, Some((8, 24)));
    assert_eq!(t.texture_reuse, Some(0));
    assert_eq!(t.parallel_groups, Some(12));
    assert!(t.gemm_scalar && t.no_fusion && t.sgd_per_tensor && t.alias_off && t.subgroups_off);
    assert_eq!(t.profile, Profile::Gpu);
    assert!(
        !t.cpu_like(wgpu::DeviceType::Cpu) && !t.alias_allowed() && !t.storage_textures_allowed()
    );
    let native = Tuning::default();
    assert!(
        native.cpu_like(wgpu::DeviceType::Cpu) && !native.cpu_like(wgpu::DeviceType::DiscreteGpu)
    );
    assert!(native.alias_allowed() && native.storage_textures_allowed());
    // The command line refuses a mistyped knob before opening a device.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_proxyless"))
        .args(["info", "--net", "nonexistent.config"])
        .env("PROXYLESS_ALIAS", "of")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && err.contains("PROXYLESS_ALIAS=\"of\": expected on|off"),
        "{err}"
    );
}

/// `time_on_device` (the latency tables' clock where the adapter has timestamp queries):
/// the device time of a piece of work lies inside the wall-clock interval around it, grows
/// with the work, and is zero for no work.
#[test]
fn device_time_lies_inside_the_wall_clock() {
    let gpu = crate::common::gpu();
    if !gpu.has_timestamps() {
        eprintln!("no timestamp queries on this adapter: wall clock only");
        assert_eq!(gpu.time_on_device(|| Ok(())).unwrap(), None);
        return;
    }
    let x = gpu
        .upload(
            &crate::common::values(3, 64 * 16 * 16 * 32),
            &[64, 16, 16, 32],
        )
        .unwrap();
    let w = gpu
        .upload(&crate::common::values(4, 96 * 32), &[96, 32])
        .unwrap();
    let run = |times: usize| {
        let t0 = std::time::Instant::now();
        let d = gpu
            .time_on_device(|| {
                for _ in 0..times {
                    proxyless::ops::pointwise::pointwise_forward(gpu, &x, &w)?;
                }
                Ok(())
            })
            .unwrap()
            .expect("timestamps");
        (d, t0.elapsed())
    };
    run(1);
    let (one, wall_one) = run(1);
    let (eight, wall_eight) = run(8);
    assert!(
        one > std::time::Duration::ZERO && one <= wall_one,
        "{one:?} vs {wall_one:?}"
    );
    assert!(
        eight <= wall_eight && eight > one * 2,
        "{eight:?} for 8 against {one:?} for 1"
    );
    assert_eq!(
        gpu.time_on_device(|| Ok(())).unwrap(),
        Some(std::time::Duration::ZERO)
    );
}
