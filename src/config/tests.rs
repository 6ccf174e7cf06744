use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "c.yaml").unwrap_err().to_string()
}

#[test]
fn defaults_for_everything_but_backends() {
    let c = Config::parse("", "c.yaml").unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:11434".parse().unwrap()]);
    assert_eq!(c.admin.listen, "127.0.0.1:11435".parse().unwrap());
    assert_eq!(c.routing.strategy, Strategy::Affinity);
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert!(c.backends.is_empty());
}

/// The shipped example writes every default out: its values are the code's, so the
/// file cannot document one default while corral uses another.
#[test]
fn the_example_file_states_the_real_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/corral.yaml");
    let example = Config::load(std::path::Path::new(path)).unwrap();
    let defaults = Config::parse("", "c.yaml").unwrap();
    assert_eq!(example.listen, defaults.listen);
    assert_eq!(example.admin.listen, defaults.admin.listen);
    assert_eq!(example.shutdown_grace, defaults.shutdown_grace);
    for (section, shown, real) in [
        (
            "routing",
            format!("{:?}", example.routing),
            format!("{:?}", defaults.routing),
        ),
        (
            "health",
            format!("{:?}", example.health),
            format!("{:?}", defaults.health),
        ),
        (
            "timeouts",
            format!("{:?}", example.timeouts),
            format!("{:?}", defaults.timeouts),
        ),
    ] {
        assert_eq!(
            shown, real,
            "conf/corral.yaml's {section} differs from the defaults"
        );
    }
    assert_eq!(example.backends[0].weight, defaults::weight());
    assert_eq!(
        defaults::max_concurrency(),
        1,
        "conf/corral.yaml says the default is 1"
    );
}

#[test]
fn full_file_parses() {
    let c = Config::parse(
        concat!(
            "listen: [127.0.0.1:1, '127.0.0.1:2']\n",
            "routing: {strategy: round_robin}\n",
            "health: {interval: 500ms}\n",
            "timeouts: {first_byte: 5m, idle: 30, header: 3s}\n",
            "backends:\n",
            "  - name: a\n",
            "    url: http://10.0.0.1:11434\n",
            "    max_concurrency: 4\n",
            "  - {name: b, url: gpu-b, weight: 2}\n",
        ),
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.routing.strategy, Strategy::RoundRobin);
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!(c.timeouts.first_byte, Duration::from_secs(300));
    assert_eq!(c.timeouts.idle, Duration::from_secs(30));
    assert_eq!(c.timeouts.header, Duration::from_secs(3));
    // Not given: the documented default.
    assert_eq!(c.timeouts.client_body, Duration::from_secs(60));
    assert_eq!(c.backends[0].max_concurrency, 4);
    assert_eq!(c.backends[1].url.authority, "gpu-b:11434");
    assert_eq!(c.backends[1].weight, 2);
}

#[test]
fn unknown_key_has_location() {
    let e = err("listen: 127.0.0.1:1\nhelth: {}\n");
    assert!(e.starts_with("c.yaml:2:1: unknown field `helth`"), "{e}");
}

#[test]
fn bad_values_have_locations() {
    let e = err("health:\n  interval: soon\n");
    assert!(e.starts_with("c.yaml:2:"), "{e}");
    assert!(e.contains("invalid duration 'soon'"), "{e}");
    let e = err("backends:\n  - name: a\n    url: http://x\n    max_concurrency: 0\n");
    assert!(e.starts_with("c.yaml:4:"), "{e}");
    assert!(e.contains("must be at least 1"), "{e}");
    let e = err("routing: {strategy: fastest}\n");
    assert!(e.starts_with("c.yaml:1:"), "{e}");
    assert!(e.contains("unknown variant `fastest`"), "{e}");
    let e = err("backends:\n  - {name: a, url: 'ftp://x'}\n");
    assert!(e.contains("only http:// and https:// are supported"), "{e}");
    assert!(e.starts_with("c.yaml:2:"), "{e}");
    let e = err("tls: {listen: '127.0.0.1:1', cert: /c}\n");
    assert!(e.starts_with("c.yaml:1:"), "{e}");
    assert!(e.contains("missing field `key`"), "{e}");
    let e = err("tls:\n  listen: nowhere\n  cert: /c\n  key: /k\n");
    assert!(e.starts_with("c.yaml:2:"), "{e}");
    let e = err("backend_tls: {ca: /ca.pem, verify: false}\n");
    assert!(e.contains("unknown field `verify`"), "{e}");
}

#[test]
fn tls_sections_parse() {
    let c = Config::parse(
        "tls: {listen: '0.0.0.0:11443', cert: /etc/corral/tls.crt, key: /etc/corral/tls.key}\n\
         backend_tls: {ca: /etc/corral/backends-ca.pem}\n",
        "t",
    )
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.listen, "0.0.0.0:11443".parse().unwrap());
    assert_eq!(tls.key, std::path::PathBuf::from("/etc/corral/tls.key"));
    assert_eq!(
        c.backend_tls.unwrap().ca,
        std::path::PathBuf::from("/etc/corral/backends-ca.pem")
    );
    assert!(Config::parse("{}", "t").unwrap().tls.is_none());
}

#[test]
fn duplicate_backend_names_are_rejected() {
    let e = err("backends:\n  - {name: a, url: x}\n  - {name: a, url: y}\n");
    // serde_norway reports the list's position for an error raised after it was read.
    assert!(e.starts_with("c.yaml:2:"), "{e}");
    assert!(e.contains("duplicate backend name 'a'"), "{e}");
}

#[test]
fn backend_url_follows_ollama_host_rules() {
    assert_eq!(BackendUrl::parse("gpu").unwrap().authority, "gpu:11434");
    assert_eq!(BackendUrl::parse("http://gpu").unwrap().authority, "gpu:80");
    assert_eq!(
        BackendUrl::parse("http://127.0.0.1:9/").unwrap().authority,
        "127.0.0.1:9"
    );
    assert_eq!(BackendUrl::parse("[::1]:5").unwrap().authority, "[::1]:5");
    assert!(BackendUrl::parse("http://gpu/ollama").is_err());
}

#[test]
fn backend_url_ports_are_explicit_or_the_ollama_defaults() {
    let authority = |s: &str| BackendUrl::parse(s).unwrap().authority;
    assert_eq!(authority("gpu:80"), "gpu:80");
    assert_eq!(authority("gpu:443"), "gpu:443");
    assert_eq!(authority("http://gpu:80"), "gpu:80");
    assert_eq!(authority("HTTP://GPU:5"), "gpu:5");
    assert_eq!(authority("http://[::1]"), "[::1]:80");
    assert_eq!(authority("10.0.0.1"), "10.0.0.1:11434");
    assert!(BackendUrl::parse("http://gpu:0").is_err());
    assert!(BackendUrl::parse("http://gpu:11434?x=1").is_err());
    assert!(BackendUrl::parse("http://gp u").is_err());
    assert!(BackendUrl::parse(":11434").is_err());
}

#[test]
fn backend_url_invalid_port_or_credentials_are_errors_with_location() {
    for bad in [
        "http://gpu:99999",
        "gpu:99999",
        "gpu:11434x",
        "http://gpu:-1",
    ] {
        let e = err(&format!("backends:\n  - name: a\n    url: '{bad}'\n"));
        assert!(e.starts_with("c.yaml:3:10: "), "{bad}: {e}");
        assert!(e.contains("invalid port number"), "{bad}: {e}");
    }
    for bad in ["http://user:pw@gpu:11434", "user@gpu", "http://:pw@gpu"] {
        let e = err(&format!("backends:\n  - name: a\n    url: '{bad}'\n"));
        assert!(e.starts_with("c.yaml:3:10: "), "{bad}: {e}");
        assert!(e.contains("has credentials"), "{bad}: {e}");
    }
    let e = err("backends:\n  - name: a\n    url: 'unix:///run/ollama.sock'\n");
    assert!(e.starts_with("c.yaml:3:10: "), "{e}");
    assert!(e.contains("only http:// and https:// are supported"), "{e}");
}

#[test]
fn https_backends_default_to_443_and_keep_their_scheme() {
    let u = BackendUrl::parse("https://gpu.internal").unwrap();
    assert!(u.tls);
    assert_eq!(
        (u.authority.as_str(), u.host.as_str()),
        ("gpu.internal:443", "gpu.internal")
    );
    assert_eq!(u.base(), "https://gpu.internal:443");
    let u = BackendUrl::parse("HTTPS://10.0.0.1:8443").unwrap();
    assert_eq!((u.authority.as_str(), u.tls), ("10.0.0.1:8443", true));
    // Round trip through the state file and the replicated pool, which store base().
    assert_eq!(BackendUrl::parse(&u.base()).unwrap(), u);
    assert!(!BackendUrl::parse("gpu:443").unwrap().tls);
    let addr = "10.0.0.1:8443".parse().unwrap();
    assert_eq!(
        u.request_url(addr, "/api/ps"),
        "https://10.0.0.1:8443/api/ps"
    );
    let plain = BackendUrl::parse("gpu:5").unwrap();
    assert_eq!(
        plain.request_url(addr, "/api/ps"),
        "http://10.0.0.1:8443/api/ps"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

    /// Whatever an editor leaves in the file, loading it answers — never panics — and a
    /// refusal is one line that starts with the file's name.
    #[test]
    fn arbitrary_text_never_panics_and_errors_name_the_file(text in "(?s).{0,300}") {
        if let Err(e) = Config::parse(&text, "c.yaml") {
            let msg = e.to_string();
            proptest::prop_assert!(msg.starts_with("c.yaml:"), "{}", msg);
        }
    }

    /// Text built from the config's own keys and values in arbitrary order and nesting
    /// exercises the validators rather than the YAML parser's first line.
    #[test]
    fn config_shaped_text_never_panics(
        lines in proptest::collection::vec(
            (0usize..3, "(listen|admin|routing|health|timeouts|backends|name|url|max_concurrency|weight|bound|queue_size|interval|max_ejection_percent|prewarm|strategy|-)",
             "(|[0-9]{1,6}|-1|1.5|2s|500ms|true|affinity|'127.0.0.1:1'|'http://h:1'|\\[\\]|\\{\\}|\\$\\{X\\})"),
            0..12),
    ) {
        let text: String = lines
            .iter()
            .map(|(indent, key, value)| format!("{}{}: {}\n", "  ".repeat(*indent), key, value))
            .collect();
        if let Err(e) = Config::parse(&text, "c.yaml") {
            proptest::prop_assert!(e.to_string().starts_with("c.yaml:"), "{}", e);
        }
    }
}

#[test]
fn zero_deadlines_and_a_zero_probe_interval_are_refused() {
    for (key, line) in [
        ("timeouts: {header: 0s}", "timeouts"),
        ("timeouts: {client_body: 0}", "timeouts"),
        ("timeouts: {idle: 0ms}", "timeouts"),
        ("health: {interval: 0s}", "health"),
    ] {
        let e = Config::parse(key, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:1:"), "{line}: {e}");
        assert!(e.contains("must be more than 0"), "{e}");
    }
    assert!(Config::parse("shutdown_grace: 0s", "c.yaml").is_ok());
}

#[test]
fn one_duration_reading_for_files_and_api_bodies() {
    use std::time::Duration;
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration(" 500ms "), Ok(Duration::from_millis(500)));
    assert!(parse_duration("-1").is_err());
    let e = parse_duration("soon").unwrap_err();
    assert!(e.starts_with("invalid duration 'soon'"), "{e}");
    // A quoted number in YAML is seconds, as an unquoted one is.
    let c = Config::parse("health: {interval: '3'}", "t").unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(3));
}
