//! Checks made before the port is bound: the built binary refuses a configuration that could only fail later
//! (or quietly misbehave) with exit code 64 and a line naming the variable, and never echoes a secret.

use testkit::process::run;
use testkit::server::closed_port;

use crate::support::BIN;

/// Runs `serve` on loopback with `env`, so a binary that wrongly started would neither bind a well-known port
/// nor hang the test (the run is bounded). Returns the exit code, stdout and stderr.
async fn serve(env: &[(&str, &str)]) -> (i32, String, String) {
    let mut vars = vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("LOG_FORMAT", "json")];
    vars.extend_from_slice(env);
    run(BIN, &["serve"], &vars).await
}

#[tokio::test]
async fn trust_forwarded_for_is_refused_naming_its_replacement() {
    let (code, out, err) = serve(&[("TRUST_FORWARDED_FOR", "true")]).await;
    assert_eq!(code, 64, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("TRUST_FORWARDED_FOR"))
        .unwrap_or_else(|| panic!("TRUST_FORWARDED_FOR not named: {err}"));
    assert!(line.contains("TRUSTED_PROXY_HOPS"), "{line}");
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn an_api_key_that_is_no_header_value_is_refused_without_showing_it() {
    for key in ["rs key 5e1f", "rs-k\u{e9}y-5e1f", "rs-key-\u{7f}5e1f"] {
        let (code, out, err) = serve(&[
            ("RISKSHIELD_API_KEY", key),
            ("RISKSHIELD_API_URL", "http://127.0.0.1:9/v1"),
        ])
        .await;
        assert_eq!(code, 64, "{key:?}: {err}");
        assert!(
            err.lines().any(|l| l.contains("RISKSHIELD_API_KEY")),
            "{err}"
        );
        for shown in [&out, &err] {
            assert!(!shown.contains("5e1f"), "the key is shown: {shown}");
        }
    }
}

#[tokio::test]
async fn extra_ca_certs_that_hold_no_trust_anchor_stop_the_start_before_the_bind() {
    let dir = std::env::temp_dir().join(format!("av-startup-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // PEM that is not a certificate (DER of a tiny SEQUENCE), an empty file, and a file that does not exist.
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.join("missing.pem");
    // The port is held by a socket of this test: a binary that bound before checking would fail to bind and
    // exit 1, not 64.
    let held = closed_port();
    let port = held.addr().port().to_string();
    for file in [&junk, &empty, &missing] {
        let path = file.display().to_string();
        let (code, out, err) = serve(&[
            ("PORT", &port),
            ("EXTRA_CA_CERTS", &path),
            ("RISKSHIELD_API_KEY", "rs-key-ca-test"),
            ("RISKSHIELD_API_URL", "https://127.0.0.1:9/v1"),
        ])
        .await;
        assert_eq!(code, 64, "{path}: {err}");
        assert!(
            err.lines()
                .next()
                .is_some_and(|l| l.contains("EXTRA_CA_CERTS")),
            "{path}: {err}"
        );
        assert!(!err.contains("cannot bind"), "{err}");
        assert!(
            out.is_empty(),
            "nothing is logged, no listening line: {out}"
        );
    }
    let (code, _, err) = serve(&[
        ("EXTRA_CA_CERTS", &junk.display().to_string()),
        ("RISKSHIELD_API_KEY", "rs-key-ca-test"),
        ("RISKSHIELD_API_URL", "https://127.0.0.1:9/v1"),
    ])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("trust anchor"), "{err}");
}

#[tokio::test]
async fn an_argument_that_is_not_utf8_is_an_argument_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"--host=\xff\xfe");
    for (subcommand, want) in [("serve", 64), ("healthcheck", 1)] {
        let out = testkit::process::command(BIN, &[subcommand], &[])
            .arg(bad)
            .output()
            .await
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(want), "{subcommand}: {err}");
        assert!(!err.contains("panicked"), "{subcommand}: {err}");
    }
    // The subcommand itself not being UTF-8 is an argument error too.
    let out = testkit::process::command(BIN, &[], &[])
        .arg(std::ffi::OsStr::from_bytes(b"\xffserve"))
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
