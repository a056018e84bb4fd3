//! The command line, run as a user would: exit codes and what it prints.

use std::process::Command;

fn proxyless(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_proxyless"))
        .args(args)
        .output()
        .expect("run the proxyless binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
