//! Every subcommand's numeric flags with bad numbers (0 where a count must be positive,
//! negatives, NaN, infinities, huge values, resolutions below 8): each run must end with exit
//! code 1 or 2 and a message naming the flag, never a panic (101).

/// (subcommand and the arguments it needs, [(flag, bad values)]).
type Table = Vec<(Vec<&'static str>, Vec<(&'static str, Vec<&'static str>)>)>;

fn table(out: &'static str) -> Table {
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/data/nets/tiny.config");
    let counts = || vec!["0", "-1", "nan", "1e30", "99999999999999999999"];
    let reals = || vec!["0", "-1", "nan", "inf", "-inf", "1e300"];
    vec![
        (
            vec!["train", "--net", tiny, "--out", out],
            vec![
                ("--epochs", counts()),
                ("--batch", counts()),
                ("--lr", reals()),
                ("--warmup-epochs", vec!["-1", "nan", "1e30"]),
                ("--weight-decay", vec!["-1", "nan", "inf", "5"]),
                ("--label-smoothing", vec!["-0.1", "1", "nan"]),
                ("--valid", vec!["-1", "nan"]),
                ("--train-images", counts()),
                ("--resolution", vec!["0", "4", "7", "-32", "nan", "100000"]),
                ("--stop-after", counts()),
                ("--seed", vec!["-1", "nan", "1e30"]),
            ],
        ),
        (
            vec!["eval", "--net", tiny, "--weights", "w.safetensors"],
            vec![
                ("--resolution", vec!["0", "4", "nan"]),
                ("--batch", counts()),
                ("--seed", vec!["-1"]),
            ],
        ),
        (
            vec!["search", "--out", out],
            vec![
                ("--width", reals()),
                ("--target-latency", reals()),
                ("--anchor-fraction", vec!["-0.1", "1.5", "nan"]),
                ("--warmup-epochs", vec!["-1", "nan"]),
                ("--epochs", vec!["-1", "nan", "1e30"]),
                ("--batch", counts()),
                ("--lr", reals()),
                ("--weight-decay", vec!["-1", "nan"]),
                ("--arch-lr", reals()),
                ("--arch-every", counts()),
                ("--reinforce-samples", counts()),
                ("--reinforce-exponent", vec!["-1", "nan", "inf"]),
                ("--reinforce-batch", counts()),
                ("--reinforce-updates", counts()),
                ("--latency-batch", counts()),
                ("--valid", counts()),
                ("--train-images", counts()),
                ("--seed", vec!["-1"]),
            ],
        ),
        (
            vec!["latency", "--space", "cifar", "--out", out],
            vec![
                ("--width", reals()),
                ("--classes", counts()),
                ("--batch", counts()),
                ("--rounds", counts()),
                ("--resolution", vec!["0", "4", "nan"]),
            ],
        ),
        (
            vec!["sample", "--lut", "t.yaml", "--out", out],
            vec![
                ("--width", reals()),
                ("--classes", counts()),
                ("--latency", reals()),
                ("--tolerance", vec!["0", "-0.1", "2", "nan"]),
                ("--measure-batch", counts()),
                ("--seed", vec!["-1"]),
            ],
        ),
        (
            vec!["info", "--net", tiny],
            vec![("--resolution", vec!["0", "4", "-8", "nan"])],
        ),
        (vec!["bench"], vec![("--reps", counts())]),
        (vec!["check"], vec![("--seed", vec!["-1", "nan"])]),
    ]
}

#[test]
fn bad_numbers_name_the_flag_and_never_panic() {
    let out = "/nonexistent/proxyless-bad-numbers";
    let mut tried = 0;
    for (base, flags) in table(out) {
        for (flag, values) in flags {
            for v in values {
                let mut args = base.clone();
                // `sample` needs --latency: give a good one unless it is the flag under test.
                if base[0] == "sample" && flag != "--latency" {
                    args.extend(["--latency", "10"]);
                }
                args.extend([flag, v]);
                let o = std::process::Command::new(env!("CARGO_BIN_EXE_proxyless"))
                    .args(&args)
                    .output()
                    .expect("run the proxyless binary");
                let err = String::from_utf8_lossy(&o.stderr);
                let code = o.status.code();
                assert!(
                    matches!(code, Some(1) | Some(2)) && err.contains(flag),
                    "{args:?}: exit {code:?}, stderr {err}"
                );
                tried += 1;
            }
        }
    }
    eprintln!("{tried} bad command lines, none panicked");
    assert!(tried >= 190, "{tried}");
}
