//! The `busbar` binary without a node: help, argument checking, `test-pattern`,
//! and what the client commands say when no node is listening.
//! (`cli_e2e` runs the client commands against a real `busbar serve`.)

use crate::harness::{busbar_bin, free_port, stderr, stdout};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn busbar(args: &[&str]) -> Output {
    busbar_with_stdin(args, None)
}

fn busbar_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(busbar_bin());
    cmd.args(args)
        .env_remove("BUSBAR_URL")
        .env_remove("BUSBAR_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the busbar binary runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

const SUBCOMMANDS: &[&str] = &[
    "serve",
    "test-pattern",
    "put",
    "rules",
    "plugins",
    "dlq",
    "replay",
    "tail",
    "call",
    "wit",
];

#[test]
fn help_lists_every_subcommand_with_a_description() {
    let out = busbar(&["--help"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for name in SUBCOMMANDS {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("`busbar --help` does not list {name}:\n{text}"));
        let description = line.trim_start()[name.len()..].trim();
        assert!(
            description.len() > 10,
            "{name} has no one-line description: {line:?}"
        );
    }
    assert!(text.contains("BUSBAR_URL"), "{text}");
}

#[test]
fn every_subcommand_has_help() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["test-pattern"],
        &["put"],
        &["rules"],
        &["rules", "list"],
        &["rules", "show"],
        &["rules", "put"],
        &["rules", "delete"],
        &["rules", "enable"],
        &["rules", "disable"],
        &["plugins"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "redrive"],
        &["dlq", "purge"],
        &["replay"],
        &["replay", "start"],
        &["replay", "status"],
        &["tail"],
        &["call"],
        &["wit"],
    ];
    for args in commands {
        let mut argv = args.to_vec();
        argv.push("--help");
        let out = busbar(&argv);
        assert_eq!(code(&out), 0, "busbar {argv:?}: {}", stderr(&out));
        let text = stdout(&out);
        let usage = format!("Usage: busbar {}", args.join(" "));
        assert!(
            text.contains(&usage),
            "busbar {argv:?} lacks {usage:?}:\n{text}"
        );
        if !matches!(args[0], "serve" | "test-pattern" | "call" | "wit") {
            assert!(
                text.contains("--url <URL>") && text.contains("--token <TOKEN>"),
                "busbar {argv:?} does not document --url and --token:\n{text}"
            );
        }
    }
}

#[test]
fn group_commands_list_their_subcommands() {
    for (group, subs) in [
        (
            "rules",
            &["list", "show", "put", "delete", "enable", "disable"][..],
        ),
        ("dlq", &["list", "show", "redrive", "purge"][..]),
        ("replay", &["start", "status"][..]),
    ] {
        let text = stdout(&busbar(&[group, "--help"]));
        for sub in subs {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
                "`busbar {group} --help` does not list {sub}:\n{text}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&["put", "--detail-type", "T"], "--source"),
        (&["put", "[]", "--source", "s"], "cannot be used with"),
        (&["dlq", "redrive"], "<ID|--all>"),
        (&["dlq", "purge", "3", "--all"], "cannot be used with"),
        (&["dlq", "show", "seven"], "invalid digit"),
        (&["rules", "put", "r"], "--pattern"),
        (
            &["rules", "put", "r", "--pattern", "{}", "--target-id", "t"],
            "--plugin",
        ),
        (&["replay", "start", "r", "--until", "now"], "--since"),
        (&["bogus"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let out = busbar(args);
        assert_eq!(code(&out), 2, "busbar {args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "busbar {args:?}: expected {needle:?} in:\n{}",
            stderr(&out)
        );
    }
}

/// Input the CLI can check itself is refused before anything is sent: exit 2,
/// and the message names the flag, not the (absent) node.
#[test]
fn bad_local_input_is_refused_before_connecting() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("events.json");
    std::fs::write(&bad_file, "[{\"source\": ").unwrap();
    let bad_file_arg = format!("@{}", bad_file.display());
    let missing = format!("@{}", dir.path().join("nope.json").display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "put",
                "--source",
                "s",
                "--detail-type",
                "t",
                "--detail",
                "{bad",
            ],
            "--detail is not valid JSON",
        ),
        (
            vec![
                "put",
                "--source",
                "s",
                "--detail-type",
                "t",
                "--detail",
                "[1]",
            ],
            "--detail must be a JSON object, got an array",
        ),
        (vec!["put", &bad_file_arg], "is not valid JSON"),
        (vec!["put", &missing], "cannot read EVENTS from"),
        (
            vec!["put", "42"],
            "EVENTS must hold an event object or an array",
        ),
        (
            vec!["put", "--file", dir.path().to_str().unwrap()],
            "cannot read --file",
        ),
        (
            vec!["rules", "put", "r", "--pattern", "[\"x\"]"],
            "--pattern must be a JSON object",
        ),
        (
            vec!["tail", "--pattern", "{nope"],
            "--pattern is not valid JSON",
        ),
        (
            vec![
                "replay",
                "start",
                "r",
                "--since",
                "yesterday",
                "--until",
                "now",
            ],
            "--since \"yesterday\" is not a time",
        ),
    ];
    for (mut args, needle) in cases {
        args.extend(["--url", &url]);
        let out = busbar(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "busbar {args:?}: {err}");
        assert!(
            err.contains(needle),
            "busbar {args:?}: expected {needle:?} in:\n{err}"
        );
        assert!(
            !err.contains("cannot reach"),
            "busbar {args:?} connected first: {err}"
        );
    }
    let out = busbar(&["plugins", "--url", "ftp://127.0.0.1"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("busbar speaks http or https, not ftp"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn client_commands_say_when_no_node_listens() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let expected = format!(
        "busbar: cannot reach busbar at {url}: connection refused (is `busbar serve` running?"
    );
    let commands: &[&[&str]] = &[
        &["put", "--source", "s", "--detail-type", "t"],
        &[
            "put",
            "[{\"source\": \"s\", \"detail-type\": \"t\", \"detail\": {}}]",
        ],
        &["rules", "list"],
        &["rules", "show", "r"],
        &["rules", "put", "r", "--pattern", "{\"source\": [\"s\"]}"],
        &["rules", "delete", "r"],
        &["rules", "enable", "r"],
        &["plugins"],
        &["dlq", "list"],
        &["dlq", "show", "1"],
        &["dlq", "redrive", "--all"],
        &["dlq", "purge", "--all"],
        &["replay", "start", "r", "--since", "1h", "--until", "now"],
        &["replay", "status"],
        &["tail"],
    ];
    for args in commands {
        let mut argv = args.to_vec();
        argv.extend(["--url", &url]);
        let out = busbar(&argv);
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "busbar {argv:?}: {err}");
        assert!(err.starts_with(&expected), "busbar {argv:?}:\n{err}");
        assert!(
            stdout(&out).is_empty(),
            "busbar {argv:?} printed {}",
            stdout(&out)
        );
    }
}

#[test]
fn the_node_address_comes_from_busbar_url_and_accepts_host_port() {
    let port = closed_port();
    let out = Command::new(busbar_bin())
        .args(["rules", "list"])
        .env("BUSBAR_URL", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot reach busbar at http://127.0.0.1:{port}: connection refused"
        )),
        "{err}"
    );
    // The flag wins over the variable.
    let other = closed_port();
    let out = Command::new(busbar_bin())
        .args(["plugins", "--url", &format!("http://127.0.0.1:{other}")])
        .env("BUSBAR_URL", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{other}")),
        "{}",
        stderr(&out)
    );
}

// test-pattern: exit 0 match, 1 no match, 2 invalid pattern, 3 invalid event.

#[test]
fn test_pattern_reports_no_match_with_exit_1() {
    let out = busbar(&[
        "test-pattern",
        "--pattern",
        r#"{"source": ["shop"]}"#,
        "--event",
        r#"{"source": "billing", "detail-type": "X", "detail": {}}"#,
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "false\n");
}

#[test]
fn test_pattern_refuses_bad_events_with_exit_3() {
    let pattern = r#"{"source": ["shop"]}"#;
    let out = busbar(&[
        "test-pattern",
        "--pattern",
        pattern,
        "--event",
        "{\"source\": ",
    ]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("malformed event JSON"),
        "{}",
        stderr(&out)
    );

    let out = busbar(&["test-pattern", "--pattern", pattern, "--event", "[1, 2]"]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("must be a JSON object"),
        "{}",
        stderr(&out)
    );

    let out = busbar(&[
        "test-pattern",
        "--pattern",
        pattern,
        "--event",
        "@/no/such/event.json",
    ]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("cannot read the event from @/no/such/event.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_pattern_refuses_an_unreadable_pattern_with_exit_2() {
    let out = busbar(&[
        "test-pattern",
        "--pattern",
        "@/no/such/pattern.json",
        "--event",
        "{}",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read the pattern from @/no/such/pattern.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_pattern_reads_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("pattern.json");
    std::fs::write(&pattern, r#"{"source": ["shop"]}"#).unwrap();
    let out = busbar_with_stdin(
        &[
            "test-pattern",
            "--pattern",
            &format!("@{}", pattern.display()),
            "--event",
            "@-",
        ],
        Some(r#"{"source": "billing", "detail-type": "X", "detail": {}}"#),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "false\n");
}

/// Needs the real pattern engine (host/src/pattern/): a matching event exits 0
/// and an invalid pattern exits 2 with the reason.
#[test]
fn test_pattern_matches_with_real_engine() {
    let out = busbar(&[
        "test-pattern",
        "--pattern",
        r#"{"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}}"#,
        "--event",
        r#"{"source": "shop", "detail-type": "OrderPlaced", "detail": {"total": 250}}"#,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "true\n");

    let out = busbar(&[
        "test-pattern",
        "--pattern",
        r#"{"source": "shop"}"#,
        "--event",
        r#"{"source": "shop", "detail-type": "X", "detail": {}}"#,
    ]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stderr(&out).starts_with("invalid pattern: "),
        "{}",
        stderr(&out)
    );
}
