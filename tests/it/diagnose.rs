//! `applicant-validator diagnose` as an operator runs it: the real binary against the fakes of its neighbours
//! (managed-identity endpoint, HTTPS Key Vault, HTTPS RiskShield), one failure at a time.

use serde_json::Value;
use testkit::azure::{
    ACCESS_TOKEN, FakeVault, IDENTITY_HEADER, SECRET_UPDATED, TestPki, VaultMode,
};
use testkit::openid::{FakeIssuer, TestSigner};
use testkit::riskshield::{FakeRiskShield, Plan, Step};

use crate::support::{BIN, Fixture, SECRET_NAME};

/// The vault's secret, and the key given directly in the tests without a vault.
const KEY: &str = "rs-diag-key-5c2e91";

/// What one run printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    report: Value,
}

impl Run {
    /// The check called `name`.
    fn check(&self, name: &str) -> &Value {
        self.report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no check {name} in {}", self.stdout))
    }

    fn status(&self, name: &str) -> &str {
        self.check(name)["status"].as_str().unwrap_or_default()
    }

    fn detail(&self, name: &str) -> &str {
        self.check(name)["detail"].as_str().unwrap_or_default()
    }

    /// Asserts the status of each named check, showing the whole report when one differs.
    fn expect(&self, expected: &[(&str, &str)]) {
        for (name, status) in expected {
            assert_eq!(
                self.status(name),
                *status,
                "{name}: {}\nreport: {}",
                self.detail(name),
                self.stdout
            );
        }
    }
}

/// Runs `diagnose` with `args` and only `env`; checks that nothing secret appears anywhere in its output.
async fn run_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (code, stdout, stderr) = testkit::process::run(BIN, args, env).await;
    for secret in [KEY, ACCESS_TOKEN, IDENTITY_HEADER] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "the output shows a secret:\n{stdout}\n{stderr}"
        );
    }
    (code, stdout)
}

/// `diagnose --json`, parsed.
async fn diagnose(env: &[(&str, &str)]) -> Run {
    let (code, stdout) = run_with(&["diagnose", "--json", "--timeout", "20s"], env).await;
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {stdout}"));
    assert_eq!(
        report["ok"],
        code == 0,
        "`ok` must agree with the exit code {code}: {stdout}"
    );
    for check in report["checks"].as_array().expect("a list of checks") {
        assert!(check["duration_ms"].is_u64(), "{check}");
        assert!(
            ["ok", "fail", "skip"].contains(&check["status"].as_str().unwrap_or_default()),
            "{check}"
        );
    }
    Run {
        code,
        stdout,
        report,
    }
}

/// The vault fixture's environment as `(name, value)` pairs, with `overrides` replacing or adding variables.
fn env_of(fx: &Fixture, overrides: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = fx
        .env("5m")
        .into_iter()
        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
        .collect();
    env.extend(overrides.iter().cloned());
    env
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// An HTTPS RiskShield served with `pki`'s certificate; it must never receive a request from `diagnose`.
async fn https_upstream(pki: &TestPki) -> FakeRiskShield {
    FakeRiskShield::https(Plan::new(Step::ok(42, "MEDIUM")), pki).await
}

#[tokio::test]
async fn every_check_passes_against_healthy_neighbours() {
    let fx = Fixture::start(VaultMode::Secret(KEY.into()), KEY, true).await;
    let upstream = https_upstream(fx.vault.pki()).await;
    let env = env_of(&fx, &[("RISKSHIELD_API_URL", upstream.url())]);
    let run = diagnose(&borrowed(&env)).await;

    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.report["ok"], true);
    run.expect(&[
        ("config", "ok"),
        ("riskshield.dns", "ok"),
        ("riskshield.tcp", "ok"),
        ("riskshield.tls", "ok"),
        ("key_vault.dns", "ok"),
        ("key_vault.tcp", "ok"),
        ("key_vault.tls", "ok"),
        ("identity.dns", "skip"),
        ("identity.tcp", "ok"),
        ("identity.tls", "skip"),
        ("identity", "ok"),
        ("key_vault", "ok"),
        ("auth", "skip"),
    ]);
    assert!(run.detail("config").contains("key source=vault"));
    assert!(run.detail("config").contains("RISKSHIELD_API_KEY=unset"));
    assert!(run.detail("riskshield.dns").contains("127.0.0.1"));
    let tls = run.detail("riskshield.tls");
    assert!(tls.contains("subject CN=localhost"), "{tls}");
    assert!(
        tls.contains("issuer CN=applicant-validator test CA"),
        "{tls}"
    );
    assert!(tls.contains("days)"), "{tls}");
    assert!(
        run.detail("identity")
            .contains("a token for Key Vault was obtained, expires"),
        "{}",
        run.detail("identity")
    );
    let read = run.detail("key_vault");
    assert!(read.contains(SECRET_NAME), "{read}");
    assert!(read.contains("version 0123456789abcdef"), "{read}");
    assert!(
        read.contains(&format!("value length {} characters", KEY.len())),
        "{read}"
    );
    let updated = applicant_validator::diagnose::cert::rfc3339(SECRET_UPDATED as i64);
    assert!(read.contains(&format!("updated {updated}")), "{read}");
    assert_eq!(run.detail("auth"), "caller authentication is off");

    // One read through the real challenge flow; the upstream was reached but never asked to score.
    assert_eq!(fx.vault.reads(), 1);
    assert!(fx.vault.challenges() >= 1);
    assert_eq!(fx.identity.requests(), 1, "the token is fetched once");
    assert!(upstream.connections() >= 1, "the TLS check connected");
    assert_eq!(upstream.count(), 0, "diagnose must never call /score");
    assert_eq!(fx.upstream.count(), 0);

    // The table says the same.
    let (code, table) = run_with(&["diagnose"], &borrowed(&env)).await;
    assert_eq!(code, 0, "{table}");
    assert!(table.starts_with("CHECK"), "{table}");
    assert!(table.contains("no check failed"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("key_vault ") && l.contains(" ok ")),
        "{table}"
    );
}

#[tokio::test]
async fn a_forbidden_read_names_the_missing_role() {
    let fx = Fixture::start(VaultMode::Status(403), KEY, true).await;
    let run = diagnose(&borrowed(&env_of(&fx, &[]))).await;

    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[("identity", "ok"), ("key_vault", "fail")]);
    let detail = run.detail("key_vault");
    assert!(detail.contains("403"), "{detail}");
    assert!(
        detail.contains("\"Key Vault Secrets User\" role"),
        "{detail}"
    );
    assert!(detail.contains(FakeVault::HOST), "{detail}");
}

#[tokio::test]
async fn a_missing_secret_is_named() {
    let fx = Fixture::start(VaultMode::Status(404), KEY, true).await;
    let run = diagnose(&borrowed(&env_of(&fx, &[]))).await;

    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[("key_vault.tls", "ok"), ("key_vault", "fail")]);
    let detail = run.detail("key_vault");
    assert!(detail.contains("404"), "{detail}");
    assert!(detail.contains(SECRET_NAME), "{detail}");
    assert!(
        detail.contains("RISKSHIELD_API_KEY_SECRET_NAME"),
        "{detail}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_fails_tls_and_names_its_issuer() {
    let fx = Fixture::start(VaultMode::Secret(KEY.into()), KEY, true).await;
    // EXTRA_CA_CERTS holds some other CA, as when a proxy re-signs traffic with a CA nobody added.
    let other = TestPki::new();
    let env = env_of(
        &fx,
        &[("EXTRA_CA_CERTS", other.ca_file().display().to_string())],
    );
    let run = diagnose(&borrowed(&env)).await;

    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[
        ("key_vault.tcp", "ok"),
        ("key_vault.tls", "fail"),
        ("identity", "ok"),
        ("key_vault", "fail"),
    ]);
    let tls = run.detail("key_vault.tls");
    assert!(tls.contains("invalid peer certificate"), "{tls}");
    assert!(tls.contains("EXTRA_CA_CERTS"), "{tls}");
    assert!(
        tls.contains("issuer CN=applicant-validator test CA"),
        "{tls}"
    );
    let read = run.detail("key_vault");
    assert!(read.contains("TLS"), "{read}");
    assert_eq!(fx.vault.reads(), 0);
}

#[tokio::test]
async fn a_certificate_expiring_within_14_days_fails() {
    let pki = TestPki::with_leaf_valid_for(5);
    let upstream = https_upstream(&pki).await;
    let ca = pki.ca_file().display().to_string();
    let url = upstream.url();
    let run = diagnose(&[
        ("RISKSHIELD_API_KEY", KEY),
        ("RISKSHIELD_API_URL", &url),
        ("EXTRA_CA_CERTS", &ca),
    ])
    .await;

    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[
        ("riskshield.tcp", "ok"),
        ("riskshield.tls", "fail"),
        ("key_vault", "skip"),
    ]);
    let tls = run.detail("riskshield.tls");
    assert!(tls.contains("expires within 14 days"), "{tls}");
    assert!(
        tls.contains("in 4 days") || tls.contains("in 5 days"),
        "{tls}"
    );
    assert_eq!(upstream.count(), 0, "diagnose must never call /score");
}

#[tokio::test]
async fn a_host_that_does_not_resolve_fails_dns_and_skips_the_rest() {
    let run = diagnose(&[
        ("RISKSHIELD_API_KEY", KEY),
        ("RISKSHIELD_API_URL", "https://riskshield.invalid/v1"),
    ])
    .await;

    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[
        ("riskshield.dns", "fail"),
        ("riskshield.tcp", "skip"),
        ("riskshield.tls", "skip"),
    ]);
    assert!(run.detail("riskshield.dns").contains("riskshield.invalid"));
    assert!(run.detail("config").contains("RISKSHIELD_API_KEY=set"));
}

#[tokio::test]
async fn demo_mode_skips_the_upstream_and_the_vault() {
    let run = diagnose(&[]).await;

    assert_eq!(run.code, 0, "{}", run.stdout);
    for name in [
        "riskshield.dns",
        "riskshield.tcp",
        "riskshield.tls",
        "key_vault.dns",
        "identity",
        "key_vault",
    ] {
        assert_eq!(run.status(name), "skip", "{name}");
        assert!(run.detail(name).contains("demo mode"), "{name}");
    }
    assert!(run.detail("config").contains("mode=demo"));
}

#[tokio::test]
async fn a_plain_http_loopback_upstream_has_no_tls_to_check() {
    let upstream = FakeRiskShield::start(Step::ok(1, "LOW")).await;
    let url = upstream.url();
    let run = diagnose(&[("RISKSHIELD_API_KEY", KEY), ("RISKSHIELD_API_URL", &url)]).await;

    assert_eq!(run.code, 0, "{}", run.stdout);
    run.expect(&[
        ("riskshield.dns", "skip"),
        ("riskshield.tcp", "ok"),
        ("riskshield.tls", "skip"),
    ]);
    assert_eq!(upstream.count(), 0, "diagnose must never call /score");
}

#[tokio::test]
async fn invalid_configuration_exits_64_with_the_lines_of_serve() {
    let env = [
        ("PORT", "http"),
        ("KEY_VAULT_URL", "http://v.example"),
        ("RISKSHIELD_API_KEY", KEY),
    ];
    let (code, stdout, diagnose_err) = testkit::process::run(BIN, &["diagnose"], &env).await;
    assert_eq!(code, 64, "{diagnose_err}");
    assert!(stdout.is_empty(), "{stdout}");
    let (code, _, serve_err) = testkit::process::run(BIN, &["serve"], &env).await;
    assert_eq!(code, 64);
    assert_eq!(diagnose_err, serve_err);
    assert!(diagnose_err.contains("KEY_VAULT_URL"), "{diagnose_err}");
    assert!(!diagnose_err.contains(KEY));

    let (code, _, err) = testkit::process::run(BIN, &["diagnose", "--timeout", "soon"], &[]).await;
    assert_eq!(code, 64);
    assert!(err.contains("--timeout"), "{err}");
}

#[tokio::test]
async fn with_caller_authentication_the_issuers_keys_are_fetched_and_counted() {
    let one = TestSigner::from_pem("key-1", include_str!("../fixtures/jwt-signing-key-1.pem"));
    let two = TestSigner::from_pem("key-2", include_str!("../fixtures/jwt-signing-key-2.pem"));
    let mut issuer = FakeIssuer::start(vec![one.jwk(), two.jwk()]).await;
    let iss = issuer.issuer();
    let ca = issuer.ca_file().display().to_string();
    let env = [
        ("AUTH_MODE", "entra"),
        ("AUTH_ISSUER", iss.as_str()),
        ("AUTH_AUDIENCE", "api://applicant-validator"),
        ("EXTRA_CA_CERTS", ca.as_str()),
    ];
    let run = diagnose(&env).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    run.expect(&[("auth", "ok")]);
    assert!(
        run.detail("auth").contains("2 signing key(s)"),
        "{}",
        run.stdout
    );
    assert_eq!(issuer.jwks_requests(), 1);

    // The issuer down: the check fails and says what it could not reach.
    issuer.take_down();
    let run = diagnose(&env).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    run.expect(&[("auth", "fail")]);
    assert!(
        run.detail("auth").contains("OpenID configuration"),
        "{}",
        run.stdout
    );

    // Off: nothing to fetch.
    let run = diagnose(&[]).await;
    run.expect(&[("auth", "skip")]);
}
