//! The Key Vault key source end to end: the real binary and the real Azure SDK against local fakes of the
//! managed-identity endpoint, an HTTPS Key Vault (test CA made at run time) and the RiskShield upstream.

mod vault_support;

use http::StatusCode;
use vault_support::{App, Fixture, SECRET_NAME, TokenMode, VaultMode, vault_read};

const KEY_ONE: &str = "rs-key-one-7d1e";
const KEY_TWO: &str = "rs-key-two-92ab";

/// No log line may carry the key or the access token.
fn assert_no_secrets_logged(app: &App, secrets: &[&str]) {
    for line in app.logs() {
        for secret in secrets {
            assert!(!line.contains(secret), "a log line leaks a secret: {line}");
        }
    }
}

#[tokio::test]
async fn first_read_serves_the_vault_key_to_the_upstream() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let mut app = App::start(&fx.env("5m")).await;

    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["key_vault"], true);
    let (status, body) = app.validate().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["riskScore"], 42);
    assert_eq!(body["riskLevel"], "MEDIUM");
    assert_eq!(fx.upstream.received(), [KEY_ONE]);
    // The SDK's challenge flow ran: one unauthenticated probe, then an authorized read.
    assert!(
        fx.vault
            .challenges
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );

    let line = app
        .wait_for_log("a successful read", |l| vault_read(l, "success"))
        .await;
    assert_eq!(line["vault"], fx.vault_host());
    assert_eq!(line["secret"], SECRET_NAME);
    assert!(line["duration_ms"].is_number(), "{line}");
    assert_no_secrets_logged(&app, &[KEY_ONE, vault_support::ACCESS_TOKEN]);
}

#[tokio::test]
async fn ten_validations_cost_one_vault_read() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = App::start(&fx.env("5m")).await;
    app.wait_ready(StatusCode::OK).await;

    for _ in 0..10 {
        let (status, body) = app.validate().await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(fx.vault.reads(), 1);
    assert_eq!(fx.upstream.received().len(), 10);
    assert_eq!(
        fx.identity
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the token is cached too"
    );
}

#[tokio::test]
async fn a_rotated_key_is_used_after_one_forced_read() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let mut app = App::start(&fx.env("5m")).await;
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(fx.vault.reads(), 1);

    fx.vault.set(VaultMode::Secret(KEY_TWO.into()));
    fx.upstream.accept_only(KEY_TWO);
    let (status, body) = app.validate_as("rotation-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fx.upstream.received(), [KEY_ONE, KEY_TWO]);
    assert_eq!(fx.vault.reads(), 2, "exactly one forced re-read");

    let (status, _) = app.validate().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fx.vault.reads(), 2, "the new key is cached");
    let line = app
        .wait_for_log("the forced read", |l| {
            vault_read(l, "success") && l["reason"] == "upstream_rejected_key"
        })
        .await;
    assert_eq!(line["key_changed"], true);
    assert_eq!(line["correlation_id"], "rotation-1");
    assert_no_secrets_logged(&app, &[KEY_ONE, KEY_TWO]);
}

#[tokio::test]
async fn an_unreachable_vault_at_start_recovers_without_a_restart() {
    let mut fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, false).await;
    // A short TTL caps the retry backoff at 2 s.
    let mut app = App::start(&fx.env("2s")).await;

    let line = app
        .wait_for_log("a failed first read", |l| vault_read(l, "unreachable"))
        .await;
    assert_eq!(line["vault"], fx.vault_host());
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["key_vault"], false);
    let (status, body) = app.validate().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "CREDENTIALS_UNAVAILABLE");
    assert!(fx.upstream.received().is_empty());

    fx.bring_vault_up().await;
    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["key_vault"], true);
    let (status, body) = app.validate().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fx.upstream.received(), [KEY_ONE]);
}

#[tokio::test]
async fn a_failing_vault_keeps_the_last_good_key() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let mut app = App::start(&fx.env("1s")).await;
    app.wait_ready(StatusCode::OK).await;

    fx.vault.set(VaultMode::Status(500));
    let line = app
        .wait_for_log("a failed re-read", |l| vault_read(l, "http_error"))
        .await;
    assert_eq!(line["level"], "WARN");
    for _ in 0..3 {
        let (status, body) = app.validate().await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(fx.upstream.received().iter().all(|k| k == KEY_ONE));
}

/// A vault answering `status` to the authorized read leaves the service not ready, with a log line that names
/// the vault and the secret and never a value.
async fn refused_read(status: u16, outcome: &str) -> (App, Fixture) {
    let fx = Fixture::start(VaultMode::Status(status), KEY_ONE, true).await;
    let mut app = App::start(&fx.env("5m")).await;
    let line = app
        .wait_for_log("the refused read", |l| vault_read(l, outcome))
        .await;
    assert_eq!(line["vault"], fx.vault_host());
    assert_eq!(line["secret"], SECRET_NAME);
    assert_eq!(line["level"], "ERROR");
    let (code, body) = app.get("/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["key_vault"], false);
    let (code, body) = app.validate().await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "CREDENTIALS_UNAVAILABLE");
    assert_no_secrets_logged(&app, &[KEY_ONE, vault_support::ACCESS_TOKEN]);
    (app, fx)
}

#[tokio::test]
async fn a_missing_secret_is_reported_by_name() {
    let (app, _fx) = refused_read(404, "not_found").await;
    let line = app
        .log_records()
        .into_iter()
        .find(|l| vault_read(l, "not_found"))
        .expect("logged");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{line}"
    );
}

#[tokio::test]
async fn access_denied_names_the_role_needed() {
    let (app, _fx) = refused_read(403, "forbidden").await;
    let line = app
        .log_records()
        .into_iter()
        .find(|l| vault_read(l, "forbidden"))
        .expect("logged");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("Key Vault Secrets User")),
        "{line}"
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_is_reported() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    *fx.identity.mode.lock().expect("lock") = TokenMode::Fail(500);
    let mut app = App::start(&fx.env("5m")).await;

    let line = app
        .wait_for_log("the credential failure", |l| {
            vault_read(l, "credential_error")
        })
        .await;
    assert_eq!(line["vault"], fx.vault_host());
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("ManagedIdentityCredential")),
        "{line}"
    );
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["key_vault"], false);
    assert_eq!(fx.vault.reads(), 0, "no authorized read without a token");
    assert_no_secrets_logged(&app, &[KEY_ONE]);
}

#[tokio::test]
async fn the_vault_certificate_must_chain_to_a_trusted_root() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let env: Vec<_> = fx
        .env("5m")
        .into_iter()
        .filter(|(name, _)| *name != "EXTRA_CA_CERTS")
        .collect();
    let mut app = App::start(&env).await;

    app.wait_for_log("the TLS failure", |l| vault_read(l, "unreachable"))
        .await;
    let (status, _) = app.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fx.vault.reads(), 0);
    assert_eq!(
        fx.vault
            .challenges
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
