//! `corral check` and `corral serve` on bad input: a clear `file:line:col` and a
//! non-zero exit.

mod common;

use std::process::Command;

use common::BIN;

fn check(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE");
    (out.status.success(), stdout, stderr)
}

#[test]
fn check_accepts_the_shipped_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/corral.yaml");
    let out = Command::new(BIN)
        .args(["check", "-c", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 backends"));
}

#[test]
fn check_reports_unknown_keys_and_bad_values_with_location() {
    let (ok, _, err) = check(
        "listen: 127.0.0.1:1\nbackends:\n  - name: a\n    url: http://x\n    max_concurency: 4\n",
    );
    assert!(!ok);
    assert!(err.contains("FILE:5:"), "{err}");
    assert!(err.contains("unknown field `max_concurency`"), "{err}");

    let (ok, _, err) = check("health:\n  interval: fast\n");
    assert!(!ok);
    assert!(err.contains("FILE:2:"), "{err}");
    assert!(err.contains("invalid duration 'fast'"), "{err}");

    let (ok, _, err) = check("listen: [nowhere]\n");
    assert!(!ok);
    assert!(err.contains("FILE:1:"), "{err}");

    let (ok, _, err) = check("backends: [\n");
    assert!(!ok);
    assert!(err.contains("FILE:"), "{err}");
}

#[test]
fn serve_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "routing: {strategy: fastest}\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown variant `fastest`"));
}

#[test]
fn a_closed_stdout_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `corral check … | head -0`: the reader is gone before corral prints.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(BIN)
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/conf/corral.yaml"),
        ])
        .stdout(writer)
        .output()
        .expect("run corral check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}
