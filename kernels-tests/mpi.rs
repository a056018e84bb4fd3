//! Data-parallel runs under `mpirun` (built with `--features mpi`; Open MPI in CI): K ranks
//! equal one process that runs the same K parts of every batch in turn (`--parts K`), a rank
//! that dies stops the job with the last checkpoint intact, and the run resumes from it.
//!
//! Both sides of each comparison fix PROXYLESS_PARALLEL_GROUPS: on a CPU adapter that count
//! follows the cores a process may use, and mpirun binds each rank to a core; other counts pick
//! other split reductions, which differ in the last bits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proxyless::nn::params::load_safetensors;

const GROUPS: &str = "8";

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proxyless-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn mpirun_command(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(ranks.to_string())
        .args(["-x", "PROXYLESS_PARALLEL_GROUPS"])
        .arg(env!("CARGO_BIN_EXE_proxyless"))
        .args(args)
        .env("PROXYLESS_PARALLEL_GROUPS", GROUPS)
        // Waiting ranks give their core to the one measuring or evaluating.
        .env("OMPI_MCA_mpi_yield_when_idle", "1");
    c
}

fn mpirun(ranks: usize, args: &[&str]) -> Output {
    let out = mpirun_command(ranks, args).output().expect("run mpirun");
    assert!(
        out.status.success(),
        "mpirun -n {ranks} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn alone(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_proxyless"))
        .args(args)
        .env("PROXYLESS_PARALLEL_GROUPS", GROUPS)
        .output()
        .expect("run proxyless");
    assert!(
        out.status.success(),
        "proxyless {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// ‖a − b‖ / ‖a‖ over every tensor of two safetensors files (which must hold the same names),
/// and the largest of the per-tensor values with its name.
fn difference(a: &Path, b: &Path) -> (f64, f64, String) {
    let (ta, _) = load_safetensors(a).unwrap();
    let (tb, _) = load_safetensors(b).unwrap();
    assert_eq!(
        ta.len(),
        tb.len(),
        "{} and {} differ in tensors",
        a.display(),
        b.display()
    );
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut worst = (0.0f64, String::new());
    for (name, (shape, x)) in &ta {
        let (shape_b, y) = tb.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(shape, shape_b, "{name}");
        let d: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum();
        let n: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum();
        num += d;
        den += n;
        // Relative to the tensor's own size, with a floor for tensors that are zero but for
        // rounding (a BN bias before another BN).
        let rel = (d / n.max(1e-6)).sqrt();
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    ((num / den).sqrt(), worst.0, worst.1)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The bar: after one epoch of `train`, 2 ranks hold the weights (and BN running
/// statistics and momentum) of one process with `--parts 2`, within 1e-4 relative; the log
/// says how the gradients were exchanged.
#[test]
fn two_ranks_train_as_one_process_with_two_parts() {
    let (one, two) = (temp_dir("train-one"), temp_dir("train-two"));
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--net",
            &repo("data/nets/cifar-small.config"),
            "--epochs",
            "1",
            "--batch",
            "32",
            "--train-images",
            "256",
            "--valid",
            "64",
            "--seed",
            "5",
            "--out",
            &out.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut a = args(&one);
    a.extend(["--parts".into(), "2".into()]);
    alone(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = args(&two);
    let out = mpirun(2, &b.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rank 1 of 2: adapter"), "{stderr}");
    // Rank 0 alone reports.
    assert_eq!(stderr.matches("epoch 1/1").count(), 1, "{stderr}");
    let (all, worst, name) = difference(
        &one.join("checkpoint.safetensors"),
        &two.join("checkpoint.safetensors"),
    );
    eprintln!("train, 1 epoch (8 steps): 1 process --parts 2 against 2 ranks: relative difference {all:e} over the checkpoint; worst tensor {name} {worst:e}");
    assert!(all < 1e-4 && worst < 1e-4, "{all} {worst} {name}");
    let (l1, l2) = (lines(&one.join("log.jsonl")), lines(&two.join("log.jsonl")));
    assert_eq!((l1.len(), l2.len()), (1, 1));
    for k in [
        "train_loss",
        "train_accuracy",
        "valid_accuracy",
        "test_accuracy",
    ] {
        let (x, y) = (l1[0][k].as_f64().unwrap(), l2[0][k].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "{k}: {x} against {y}"
        );
    }
    assert_eq!(l2[0]["ranks"], 2);
    assert_eq!(l2[0]["parts"], 2);
    let ex = &l2[0]["gradient_exchange"];
    eprintln!("gradient exchange per step: {ex}");
    assert_eq!(ex["exchanges"], 8, "{ex}");
    assert!(ex["bytes"].as_u64().unwrap() > 100_000, "{ex}");
    assert!(l1[0]["gradient_exchange"].is_null());
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A short search on 2 ranks gives the architecture history of one process with `--parts 2`,
/// number for number, with the gradient update (rank 0 measures the latency table, the other
/// gets its numbers) and with REINFORCE.
#[test]
fn two_ranks_search_as_one_process_with_two_parts() {
    for update in ["gradient", "reinforce"] {
        let (one, two) = (temp_dir("search-one"), temp_dir("search-two"));
        let args = |out: &Path| -> Vec<String> {
            [
                "search",
                "--arch-update",
                update,
                "--train-images",
                "96",
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
                &out.to_string_lossy(),
            ]
            .map(String::from)
            .to_vec()
        };
        let b = args(&two);
        mpirun(2, &b.iter().map(String::as_str).collect::<Vec<_>>());
        let table = two.join("latency.yaml");
        assert!(table.is_file(), "rank 0 writes the measured table");
        let mut a = args(&one);
        a.extend([
            "--parts".into(),
            "2".into(),
            "--lut".into(),
            table.to_string_lossy().into_owned(),
        ]);
        alone(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let history = |d: &Path| std::fs::read_to_string(d.join("arch_history.jsonl")).unwrap();
        let (h1, h2) = (history(&one), history(&two));
        assert_eq!(h1.lines().count(), 3);
        assert!(
            h1 == h2,
            "{update}: the architecture histories differ:\n{h1}\n{h2}"
        );
        let (all, worst, name) = difference(
            &one.join("checkpoint.safetensors"),
            &two.join("checkpoint.safetensors"),
        );
        eprintln!("search ({update}): architecture history equal; relative difference {all:e} over the checkpoint; worst tensor {name} {worst:e}");
        assert!(all < 1e-4 && worst < 1e-4, "{all} {worst} {name}");
        for d in [one, two] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The pids of the ranks whose command line names `out`, by rank.
fn ranks_of(out: &Path) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.starts_with(env!("CARGO_BIN_EXE_proxyless"))
            || !cmdline.contains(&*out.to_string_lossy())
        {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = String::from_utf8_lossy(&environ)
            .split('\0')
            .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok());
        if let Some(r) = rank {
            found.push((r, pid));
        }
    }
    found.sort();
    found
}

/// A rank killed mid-run stops the job: mpirun fails, naming the rank, and the survivor says
/// it was stopped and that the last checkpoint is intact. That checkpoint resumes, and the
/// resumed run ends where an uninterrupted one does. A resume with another number of parts is
/// refused.
#[test]
fn a_killed_rank_stops_the_job_and_the_checkpoint_resumes() {
    let (killed, whole) = (temp_dir("killed"), temp_dir("whole"));
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--net",
            &repo("data/nets/tiny.config"),
            "--epochs",
            "5",
            "--batch",
            "32",
            "--train-images",
            "320",
            "--valid",
            "64",
            "--out",
            &out.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(&killed);
    let child = mpirun_command(2, &a.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill rank 1 once epoch 1 is logged (its checkpoint follows at once) and before the end.
    let start = std::time::Instant::now();
    while lines(&killed.join("log.jsonl")).is_empty() {
        assert!(start.elapsed().as_secs() < 300, "no epoch logged in 300 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ranks = ranks_of(&killed);
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let status = Command::new("kill")
        .args(["-9", &ranks[1].1.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("mpirun after rank 1 was killed:\n{stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "mpirun names the rank: {stderr}"
    );
    assert!(
        stderr.contains("error on rank 0 of 2: stopped by mpirun") && stderr.contains("--resume"),
        "the survivor says why: {stderr}"
    );
    let done = lines(&killed.join("log.jsonl")).len();
    assert!((1..5).contains(&done), "{done} epochs logged");
    let (_, meta) = load_safetensors(&killed.join("checkpoint.safetensors")).unwrap();
    let held: usize = meta["epochs_done"].parse().unwrap();
    assert!(held >= 1 && held <= done, "checkpoint {held}, log {done}");
    // Another number of parts is refused before anything is written.
    let mut other = a.clone();
    other.push("--resume".into());
    let refused = Command::new(env!("CARGO_BIN_EXE_proxyless"))
        .args(&other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("2 parts") && err.contains("cuts them into 1"),
        "{err}"
    );
    mpirun(2, &other.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(lines(&killed.join("log.jsonl")).len(), 5);
    let b = args(&whole);
    mpirun(2, &b.iter().map(String::as_str).collect::<Vec<_>>());
    let (all, worst, name) = difference(
        &whole.join("checkpoint.safetensors"),
        &killed.join("checkpoint.safetensors"),
    );
    assert!(
        all == 0.0,
        "resumed against uninterrupted: {all} (worst {name} {worst})"
    );
    for d in [killed, whole] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Every rank reads the checkpoint on `--resume` (on several machines, from a shared
/// directory): ranks that read different ones are stopped before any step, with an error that
/// says so, instead of training apart.
#[test]
fn ranks_that_read_different_checkpoints_are_refused() {
    let base = temp_dir("two-checkpoints");
    let (early, late) = (base.join("early"), base.join("late"));
    let args = |out: &Path, more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--net",
            &repo("data/nets/tiny.config"),
            "--epochs",
            "3",
            "--batch",
            "32",
            "--train-images",
            "128",
            "--valid",
            "32",
            "--out",
            &out.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec();
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| mpirun(2, &a.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&early, &["--stop-after", "1"]));
    std::fs::create_dir_all(&late).unwrap();
    for f in ["checkpoint.safetensors", "log.jsonl"] {
        std::fs::copy(early.join(f), late.join(f)).unwrap();
    }
    run(args(&late, &["--stop-after", "2", "--resume"]));
    // Rank r resumes from base/rR: rank 0 from the 1-epoch checkpoint, rank 1 from the 2-epoch one.
    std::os::unix::fs::symlink(&early, base.join("r0")).unwrap();
    std::os::unix::fs::symlink(&late, base.join("r1")).unwrap();
    let mut a = args(Path::new("unused"), &["--resume"]);
    let at = a.iter().position(|s| s == "--out").unwrap();
    a.drain(at..at + 2);
    let script = format!(
        "exec \"$@\" --out {}/r$OMPI_COMM_WORLD_RANK",
        base.to_string_lossy()
    );
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n", "2"])
        .args(["sh", "-c", &script, "sh", env!("CARGO_BIN_EXE_proxyless")])
        .args(&a);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error on rank 1 of 2")
            && stderr.contains("another checkpoint than rank 0"),
        "{stderr}"
    );
    // Nothing was trained: the two checkpoints are as they were.
    for (d, epochs) in [(&early, "1"), (&late, "2")] {
        let (_, meta) = load_safetensors(&d.join("checkpoint.safetensors")).unwrap();
        assert_eq!(meta["epochs_done"], epochs);
    }
    let _ = std::fs::remove_dir_all(&base);
}
