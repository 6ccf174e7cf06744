use super::*;

fn config(yaml: &str) -> Config {
    Config::parse(yaml, "t").unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn listeners_that_would_collide() {
    assert!(overlap(addr("127.0.0.1:5"), addr("127.0.0.1:5")));
    assert!(overlap(addr("0.0.0.0:5"), addr("127.0.0.1:5")));
    assert!(overlap(addr("10.0.0.1:5"), addr("0.0.0.0:5")));
    // `[::]` is dual-stack by default on Linux; `0.0.0.0` covers IPv4 only.
    assert!(overlap(addr("[::]:5"), addr("127.0.0.1:5")));
    assert!(overlap(addr("[::]:5"), addr("0.0.0.0:5")));
    assert!(!overlap(addr("0.0.0.0:5"), addr("[::1]:5")));
    assert!(!overlap(addr("127.0.0.1:5"), addr("127.0.0.2:5")));
    assert!(!overlap(addr("127.0.0.1:5"), addr("127.0.0.1:6")));
    assert!(!overlap(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
}

#[test]
fn a_shared_address_names_both_settings() {
    let e = validate(&config("listen: 0.0.0.0:7\nadmin: {listen: '127.0.0.1:7'}"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "listen 0.0.0.0:7 and admin.listen 127.0.0.1:7 cannot both listen there (same port)"
    );
    let e = validate(&config("listen: [127.0.0.1:7, 127.0.0.1:7]"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("listen 127.0.0.1:7 and listen 127.0.0.1:7"),
        "{e}"
    );
    assert!(validate(&config("listen: [127.0.0.1:7, 127.0.0.1:8]")).is_ok());
}

#[test]
fn the_admin_token_rule_is_part_of_validation() {
    let e = validate(&config("admin: {listen: '0.0.0.0:1'}")).unwrap_err();
    assert!(
        matches!(e, StartupError::Admin(TokenError::OpenAdmin(_))),
        "{e}"
    );
    let e = validate(&config("admin: {token: a, token_file: /b}")).unwrap_err();
    assert!(matches!(e, StartupError::Admin(TokenError::Both)), "{e}");
}

#[test]
fn prepare_reads_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
    let yaml = format!("state_dir: '{}'", dir.path().display());
    let e = prepare(config(&yaml)).err().unwrap().to_string();
    assert!(e.contains("invalid state file"), "{e}");

    std::fs::write(
        dir.path().join("state.json"),
        r#"{"backends":[{"name":"x","url":"http://h:1","weight":1,"max_concurrency":1}]}"#,
    )
    .unwrap();
    let prepared = prepare(config(&yaml)).unwrap();
    assert!(prepared.pool.load().get("x").is_some());
}

#[test]
fn a_taken_port_is_an_error_naming_the_setting() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let yaml = format!("listen: 127.0.0.1:0\nadmin: {{listen: '{taken}'}}");
    let e = listeners::bind(&config(&yaml)).err().unwrap();
    assert!(
        matches!(e, StartupError::Bind { setting: "admin.listen", addr, .. } if addr == taken),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with(&format!("cannot listen on {taken} (admin.listen): ")));
}

#[test]
fn the_tls_port_is_a_listener_and_its_files_must_load() {
    let e = validate(&config(
        "listen: 0.0.0.0:7\ntls: {listen: '127.0.0.1:7', cert: /c, key: /k}",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("listen 0.0.0.0:7 and tls.listen 127.0.0.1:7"),
        "{e}"
    );

    let e = validate(&config(
        "tls: {listen: '127.0.0.1:9', cert: /nonexistent/tls.crt, key: /k}",
    ))
    .unwrap_err();
    assert!(matches!(e, StartupError::Tls(_)), "{e}");
    assert!(
        e.to_string().starts_with("tls.cert /nonexistent/tls.crt: "),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "no PEM here\n").unwrap();
    let e = validate(&config(&format!("backend_tls: {{ca: '{}'}}", ca.display())))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("backend_tls.ca "), "{e}");
    assert!(e.contains("no certificate in the file"), "{e}");
    let made = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
    std::fs::write(&ca, made.cert.pem()).unwrap();
    let prepared = prepare(config(&format!("backend_tls: {{ca: '{}'}}", ca.display()))).unwrap();
    assert_eq!(
        prepared.backend_trust.ca_file(),
        Some(ca.display().to_string())
    );
}
