//! The command line, run as a user would: exit codes and what it prints.

use crate::common::proxyless;

#[test]
fn check_prints_a_table_and_succeeds() {
    let (ok, out, err) = proxyless(&["check", "--family", "reduce", "--seed", "3"]);
    assert!(ok, "check failed: {out}\n{err}");
    assert!(
        out.contains("seed 3") && out.contains("channel_sum"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{out}"
    );
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let (ok, _, err) = proxyless(&["check", "--family", "nope"]);
    assert!(!ok);
    assert!(err.contains("valid:") && err.contains("depthwise"), "{err}");
    let (ok, _, err) = proxyless(&["bench", "--workload", "nope", "--reps", "1"]);
    assert!(!ok);
    assert!(err.contains("valid:") && err.contains("dw3s2"), "{err}");
    let (ok, _, err) = proxyless(&["check", "--adapter", "no such adapter"]);
    assert!(!ok);
    assert!(err.contains("no adapter name contains"), "{err}");
}

#[test]
fn devices_lists_at_least_one_adapter() {
    let (ok, out, err) = proxyless(&["devices"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("[0] ") && out.contains("max storage binding"),
        "{out}"
    );
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn info_prints_the_layer_table_and_totals() {
    let (ok, out, err) = proxyless(&["info", "--net", &repo("data/nets/cifar-mb6k5.config")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("first_conv") && out.contains("blocks.21") && out.contains("classifier"),
        "{out}"
    );
    let total = out.lines().last().unwrap_or("");
    assert!(
        total.starts_with("total: ") && total.contains("parameters"),
        "{out}"
    );
    let (ok, _, err) = proxyless(&["info", "--net", "/nonexistent/net.config"]);
    assert!(!ok && err.contains("/nonexistent/net.config"), "{err}");
}

/// A short train on the synthetic set writes every output file, and eval reads the weights back.
#[test]
fn train_then_eval_on_the_synthetic_set() {
    let dir = std::env::temp_dir().join(format!("proxyless-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_string_lossy().into_owned();
    let net = repo("data/nets/tiny.config");
    let args = [
        "train",
        "--net",
        &net,
        "--epochs",
        "1",
        "--batch",
        "32",
        "--valid",
        "500",
        "--resolution",
        "12",
        "--lr",
        "0.1",
        "--out",
        &out,
    ];
    let (ok, stdout, err) = proxyless(&args);
    assert!(ok, "{stdout}\n{err}");
    assert!(
        stdout.contains("test accuracy") && err.contains("epoch 1/1"),
        "{stdout}\n{err}"
    );
    for f in [
        "log.jsonl",
        "checkpoint.safetensors",
        "weights.safetensors",
        "net.config",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // The same run again writes the same bytes (metadata included: it used to come out in
    // hash order).
    let dir2 = std::env::temp_dir().join(format!("proxyless-cli-train2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir2);
    let out2 = dir2.to_string_lossy().into_owned();
    let mut args2 = args.to_vec();
    *args2.last_mut().unwrap() = &out2;
    let (ok, _, err) = proxyless(&args2);
    assert!(ok, "{err}");
    for f in ["checkpoint.safetensors", "weights.safetensors"] {
        let (a, b) = (
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(dir2.join(f)).unwrap(),
        );
        assert!(a == b, "{f}: two identical runs wrote different bytes");
    }
    let _ = std::fs::remove_dir_all(&dir2);
    let weights = format!("{out}/weights.safetensors");
    let (ok, stdout, err) = proxyless(&[
        "eval",
        "--net",
        &format!("{out}/net.config"),
        "--weights",
        &weights,
        "--resolution",
        "12",
        "--logits",
        &format!("{out}/logits.npy"),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("1000 images: accuracy"), "{stdout}");
    // The logits as .npy: magic, version 1.0, a header that ends the 64-byte-aligned preamble
    // and names float32 [1000, 10], then 1000 x 10 finite values.
    let npy = std::fs::read(dir.join("logits.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(
        (10 + header_len).is_multiple_of(64)
            && header.ends_with('\n')
            && header.contains("'descr': '<f4'")
            && header.contains("'shape': (1000, 10)"),
        "{header:?}"
    );
    let values: Vec<f32> = npy[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(values.len() == 10_000 && values.iter().all(|v| v.is_finite()));
    // Nothing left to do: resuming a finished run says so.
    let mut again = args.to_vec();
    again.push("--resume");
    let (ok, _, err) = proxyless(&again);
    assert!(!ok && err.contains("already done"), "{err}");
    // Weights of another net.
    let (ok, _, err) = proxyless(&[
        "eval",
        "--net",
        &repo("data/nets/cifar-small.config"),
        "--weights",
        &weights,
    ]);
    assert!(!ok && err.contains("weights.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_refuses_bad_data_and_mismatched_classes() {
    let net = repo("data/nets/tiny.config");
    let (ok, _, err) = proxyless(&[
        "train",
        "--net",
        &net,
        "--data",
        "/nonexistent/cifar",
        "--out",
        "/tmp/x",
    ]);
    assert!(!ok && err.contains("/nonexistent/cifar"), "{err}");
    // A folder with 2 classes against a 10-class net.
    let dir = std::env::temp_dir().join(format!("proxyless-cli-classes-{}", std::process::id()));
    for class in ["cat", "dog"] {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..3 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 40, 7, 9]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let (ok, _, err) = proxyless(&[
        "train",
        "--net",
        &net,
        "--data",
        &dir.to_string_lossy(),
        "--valid",
        "1",
        "--out",
        "/tmp/x",
    ]);
    assert!(
        !ok && err.contains("10 outputs") && err.contains("2 classes"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A short search on the synthetic set writes every output the issue names, with the
/// latency table measured here and a summary of expected against measured latency; then
/// `latency --lut --net --measure` predicts and times the derived net.
#[test]
fn search_on_the_synthetic_set_writes_every_output() {
    let dir = std::env::temp_dir().join(format!("proxyless-cli-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_string_lossy().into_owned();
    let args = [
        "search",
        "--train-images",
        "64",
        "--valid",
        "64",
        "--batch",
        "32",
        "--warmup-epochs",
        "1",
        "--epochs",
        "2",
        "--arch-every",
        "1",
        "--latency-batch",
        "1",
        "--out",
        &out,
    ];
    let (ok, stdout, err) = proxyless(&args);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("derived net:") && stdout.contains("measured"),
        "{stdout}"
    );
    for f in [
        "net.config",
        "weights.safetensors",
        "arch_history.jsonl",
        "log.jsonl",
        "latency.yaml",
        "summary.json",
        "checkpoint.safetensors",
        "arch_probs.png",
        "curves.png",
        "latency.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // `plot --run` redraws the three plots from the logs: text and lines, not a blank page.
    for f in ["arch_probs.png", "curves.png", "latency.png"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let (ok, stdout, err) = proxyless(&["plot", "--run", &out]);
    assert!(ok && stdout.contains("latency.png"), "{err}");
    for f in ["arch_probs.png", "curves.png", "latency.png"] {
        let img = image::open(dir.join(f)).unwrap().to_rgb8();
        let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(
            img.width() >= 600 && inked > 2000,
            "{f}: {inked} inked pixels"
        );
    }
    let (ok, _, err) = proxyless(&["plot", "--run", "/nonexistent/run"]);
    assert!(!ok && err.contains("/nonexistent/run"), "{err}");
    let history = std::fs::read_to_string(dir.join("arch_history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for k in ["expected_cost", "measured_ms"] {
        let v = summary[k].as_f64().unwrap_or(f64::NAN);
        assert!(v > 0.0 && v.is_finite(), "{k}: {summary}");
    }
    assert_eq!(summary["choice"].as_array().map(Vec::len), Some(21));

    let lut = dir.join("latency.yaml").to_string_lossy().into_owned();
    let net = dir.join("net.config").to_string_lossy().into_owned();
    let (ok, stdout, err) = proxyless(&[
        "latency",
        "--lut",
        &lut,
        "--net",
        &net,
        "--net",
        &net,
        "--measure",
        "--batch",
        "1",
        "--rounds",
        "2",
    ]);
    assert!(ok, "{err}");
    // Two nets, each predicted and measured over two interleaved rounds.
    assert_eq!(stdout.matches("predicted").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("measured on").count(), 2, "{stdout}");
    assert!(stdout.contains("median of 2 rounds"), "{stdout}");
    let (ok, _, err) = proxyless(&[
        "latency",
        "--lut",
        &lut,
        "--net",
        &net,
        "--measure",
        "--rounds",
        "0",
    ]);
    assert!(!ok && err.contains("--rounds"), "{err}");
    // The search warmed up with the default, grown, warm-up.
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert!(log.contains("\"grown\":true"), "{log}");

    // `sample` draws a random net whose predicted latency lies inside the window.
    let target = summary["expected_cost"].as_f64().unwrap();
    let drawn = dir.join("random.config").to_string_lossy().into_owned();
    let target_arg = format!("{target}");
    let sample = |extra: &[&str]| {
        let mut a = vec![
            "sample", "--width", "0.25", "--lut", &lut, "--out", &drawn, "--seed", "3",
        ];
        a.extend_from_slice(extra);
        proxyless(&a)
    };
    let (ok, stdout, err) = sample(&["--latency", &target_arg]);
    assert!(ok, "{err}");
    assert!(stdout.contains("sampled net:"), "{stdout}");
    let (ok, stdout, err) = proxyless(&["latency", "--lut", &lut, "--net", &drawn]);
    assert!(ok, "{err}");
    let predicted: f64 = stdout
        .split("predicted ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no prediction in {stdout}"));
    assert!(
        (predicted - target).abs() <= 0.05 * target + 1e-3,
        "{predicted} ms drawn for a {target} ms target"
    );
    // Bad input is refused with a reason.
    let (ok, _, err) = sample(&["--latency", &target_arg, "--tolerance", "2"]);
    assert!(!ok && err.contains("tolerance"), "{err}");
    let (ok, _, err) = sample(&["--latency=-1"]);
    assert!(
        !ok && err.contains("--latency") && err.contains("not in"),
        "{err}"
    );
    let (ok, _, err) = sample(&["--latency", "1e9"]);
    assert!(!ok && err.contains("its nets cost"), "{err}");
    let (ok, _, err) = proxyless(&[
        "sample",
        "--width",
        "0.25",
        "--lut",
        "/nonexistent.yaml",
        "--latency",
        "1",
        "--out",
        &drawn,
    ]);
    assert!(!ok && err.contains("nonexistent"), "{err}");

    // A resumed run with another flag is refused, naming it.
    let mut other = args.to_vec();
    other[2] = "96";
    other.push("--resume");
    let (ok, _, err) = proxyless(&other);
    assert!(!ok && err.contains("--train-images"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Search resume is exact: a short search killed with SIGKILL at 6 or more random moments of
/// its progress, and resumed after each (reloading the latency table it measured), writes the
/// same checkpoint bytes, `arch_history.jsonl`, `log.jsonl` epochs and `net.config` as one
/// uninterrupted run on that table. A changed flag is refused by name.
#[test]
fn search_killed_and_resumed_equals_an_uninterrupted_run() {
    use rand::{Rng, SeedableRng};
    let base = std::env::temp_dir().join(format!("proxyless-cli-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (killed, whole) = (base.join("killed"), base.join("whole"));
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "search",
            "--train-images",
            "96",
            "--valid",
            "32",
            "--batch",
            "16",
            "--warmup-epochs",
            "2",
            "--epochs",
            "3",
            "--arch-every",
            "2",
            "--latency-batch",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let lines = |d: &std::path::Path| -> usize {
        std::fs::read_to_string(d.join("log.jsonl")).map_or(0, |t| t.lines().count())
    };
    // Kills follow the run's own progress, not the clock, so that a loaded machine still sees
    // kills after checkpoints: a start is killed after it logs one more epoch plus a random
    // part of an epoch's time, or at a random moment of its first steps.
    // (ms after the start, whether that start resumed): at least 6 kills, 4 of them of runs
    // that resumed from a checkpoint.
    let mut moments: Vec<(u64, bool)> = Vec::new();
    let mut epoch_ms = 100u64;
    while moments.len() < 6 || moments.iter().filter(|m| m.1).count() < 4 {
        assert!(moments.len() < 40, "no progress: kills at {moments:?}");
        let mut a = args(&killed);
        // Killed before its first checkpoint, a run starts again (and measures again).
        let resumed = killed.join("checkpoint.safetensors").exists();
        if resumed {
            a.push("--resume".into());
        }
        let before = lines(&killed);
        let start = std::time::Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proxyless"))
            .args(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sleep = |ms: u64| std::thread::sleep(std::time::Duration::from_millis(ms));
        // The last of the 5 epochs is never waited for, so the run cannot end.
        if before < 4 && rng.random_bool(0.7) {
            let mut first_line = None;
            while lines(&killed) <= before + usize::from(first_line.is_some()) {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the search ended before its kill (kills so far {moments:?})"
                );
                assert!(start.elapsed().as_secs() < 300, "no epoch logged in 300 s");
                sleep(5);
                if first_line.is_none() && lines(&killed) > before {
                    first_line = Some(std::time::Instant::now());
                    // Past epoch 4 the next line would end the run: stop at this one.
                    if before + 1 >= 4 || rng.random_bool(0.5) {
                        break;
                    }
                }
            }
            // Two lines seen: the time between them is an epoch's.
            if let (Some(t), true) = (first_line, lines(&killed) > before + 1) {
                epoch_ms = epoch_ms.max(t.elapsed().as_millis() as u64);
            }
            // Less after epoch 4's line: epoch 5 must not end before the kill.
            let part = if lines(&killed) >= 4 { 3 } else { 8 };
            sleep(rng.random_range(0..epoch_ms * part / 10));
        } else {
            sleep(rng.random_range(20..150));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before its kill (kills so far {moments:?})"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        moments.push((start.elapsed().as_millis() as u64, resumed));
    }
    eprintln!("search killed at (ms after start, resumed): {moments:?}");
    let mut a = args(&killed);
    a.push("--resume".into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (ok, _, err) = proxyless(&a);
    assert!(
        ok,
        "killed at {moments:?} ms, the last resume failed: {err}"
    );
    let lut = killed.join("latency.yaml").to_string_lossy().into_owned();
    let mut b = args(&whole);
    b.extend(["--lut".to_string(), lut]);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let (ok, _, err) = proxyless(&b);
    assert!(ok, "{err}");
    for f in ["checkpoint.safetensors", "arch_history.jsonl", "net.config"] {
        let (x, y) = (
            std::fs::read(killed.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs after kills at {moments:?} ms");
    }
    let epochs = |d: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(d.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        epochs(&killed),
        vec![1, 2, 3, 4, 5],
        "kills at {moments:?} ms"
    );
    assert_eq!(epochs(&killed), epochs(&whole));
    // A flag that alters the run is refused by name.
    let mut c = args(&killed);
    let at = c.iter().position(|s| s == "--arch-every").unwrap() + 1;
    c[at] = "3".into();
    c.push("--resume".into());
    let c: Vec<&str> = c.iter().map(String::as_str).collect();
    let (ok, _, err) = proxyless(&c);
    assert!(
        !ok && err.contains("--arch-every 2") && err.contains("--arch-every 3"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `kernels --dump` writes the WGSL of every kernel variant a workload compiled, one file
/// each, named by kernel, holding the kernel's cache key and its full source (header comment
/// and entry point included); a workload it cannot run is refused.
#[test]
fn kernels_dump_writes_every_compiled_variant() {
    let dir = std::env::temp_dir().join(format!("proxyless-cli-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let (ok, stdout, err) = proxyless(&["kernels", "--dump", &d, "--workload", "dw3s2"]);
    assert!(ok, "{err}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    assert!(
        stdout.starts_with(&format!("{} kernel variants", files.len())),
        "{stdout}"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".wgsl") && text.starts_with("// kernel: ") && text.contains("@compute"),
            "{name}"
        );
    }
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().contains("depthwise__")));
    // As written, the depthwise kernel keeps its loops; --unrolled writes what was compiled,
    // with none over a constant left, for the same variants.
    let dw = |dir: &str| -> String {
        let f = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|f| f.to_string_lossy().contains("depthwise__"))
            .unwrap();
        std::fs::read_to_string(f).unwrap()
    };
    let written = dw(&d);
    assert!(written.contains("for (var ky = 0u; ky < K; ky++)") && !written.contains("{{"));
    let u = format!("{d}-unrolled");
    let (ok, stdout_u, err) =
        proxyless(&["kernels", "--dump", &u, "--workload", "dw3s2", "--unrolled"]);
    assert!(
        ok && stdout_u.starts_with(&format!("{} kernel", files.len())),
        "{err}"
    );
    let unrolled = dw(&u);
    assert!(!unrolled.contains("ky < K;") && unrolled.contains("const ky = 2u;"));
    let _ = std::fs::remove_dir_all(&u);
    let (ok, _, err) = proxyless(&["kernels", "--dump", &d, "--workload", "memory"]);
    assert!(!ok && err.contains("--workload"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
