//! The Key Vault key source end to end: the real binary and the real Azure SDK against local fakes of the
//! managed-identity endpoint, an HTTPS Key Vault (test CA made at run time) and the RiskShield upstream.

use http::StatusCode;
use http::header::HeaderValue;
use serde_json::Value;
use testkit::azure::{ACCESS_TOKEN, FakeVault, TokenMode, VaultMode};

use crate::support::{Fixture, SECRET_NAME, vault_read};

const KEY_ONE: &str = "rs-key-one-7d1e";
const KEY_TWO: &str = "rs-key-two-92ab";

#[tokio::test]
async fn first_read_serves_the_vault_key_to_the_upstream() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;

    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["key_vault"], true);
    let reply = app.validate().await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["riskScore"], 42);
    assert_eq!(body["riskLevel"], "MEDIUM");
    assert_eq!(fx.upstream.keys(), [KEY_ONE]);
    // The SDK's challenge flow ran: one unauthenticated probe, then an authorized read.
    assert!(fx.vault.challenges() >= 1);

    let line = app
        .process
        .wait_for_log("a successful read", |l| vault_read(l, "success"))
        .await;
    assert_eq!(line["vault"], FakeVault::HOST);
    assert_eq!(line["secret"], SECRET_NAME);
    assert!(line["duration_ms"].is_number(), "{line}");
    app.assert_no_secrets_logged(&[KEY_ONE, ACCESS_TOKEN]);
}

#[tokio::test]
async fn ten_validations_cost_one_vault_read() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;
    app.wait_ready(StatusCode::OK).await;

    for _ in 0..10 {
        let reply = app.validate().await;
        let (status, body) = (reply.status, reply.json());
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(fx.vault.reads(), 1);
    assert_eq!(fx.upstream.keys().len(), 10);
    assert_eq!(fx.identity.requests(), 1, "the token is cached too");
}

#[tokio::test]
async fn a_rotated_key_is_used_after_one_forced_read() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(fx.vault.reads(), 1);

    fx.vault.set(VaultMode::Secret(KEY_TWO.into()));
    fx.upstream.accept_only(HeaderValue::from_static(KEY_TWO));
    let reply = app.validate_as("rotation-1").await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fx.upstream.keys(), [KEY_ONE, KEY_TWO]);
    assert_eq!(fx.vault.reads(), 2, "exactly one forced re-read");

    let status = app.validate().await.status;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fx.vault.reads(), 2, "the new key is cached");
    let line = app
        .process
        .wait_for_log("the forced read", |l| {
            vault_read(l, "success") && l["reason"] == "upstream_rejected_key"
        })
        .await;
    assert_eq!(line["key_changed"], true);
    assert_eq!(line["correlation_id"], "rotation-1");
    app.assert_no_secrets_logged(&[KEY_ONE, KEY_TWO]);
}

#[tokio::test]
async fn an_unreachable_vault_at_start_recovers_without_a_restart() {
    let mut fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, false).await;
    // A short TTL caps the retry backoff at 2 s.
    let app = fx.app("2s", &[]).await;

    let line = app
        .process
        .wait_for_log("a failed first read", |l| vault_read(l, "unreachable"))
        .await;
    assert_eq!(line["vault"], FakeVault::HOST);
    let reply = app.get("/ready").await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["key_vault"], false);
    let reply = app.validate().await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "CREDENTIALS_UNAVAILABLE");
    assert!(fx.upstream.keys().is_empty());

    fx.vault.bring_up().await;
    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["key_vault"], true);
    let reply = app.validate().await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fx.upstream.keys(), [KEY_ONE]);
}

#[tokio::test]
async fn a_failing_vault_keeps_the_last_good_key() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("1s", &[]).await;
    app.wait_ready(StatusCode::OK).await;

    fx.vault.set(VaultMode::Status(500));
    let line = app
        .process
        .wait_for_log("a failed re-read", |l| vault_read(l, "http_error"))
        .await;
    assert_eq!(line["level"], "WARN");
    for _ in 0..3 {
        let reply = app.validate().await;
        let (status, body) = (reply.status, reply.json());
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let reply = app.get("/ready").await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(fx.upstream.keys().iter().all(|k| k == KEY_ONE));
}

/// A vault answering `status` to the authorized read leaves the service not ready, with a log line that names
/// the vault and the secret and never a value; returns that line.
async fn refused_read(status: u16, outcome: &str) -> Value {
    let fx = Fixture::start(VaultMode::Status(status), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;
    let line = app
        .process
        .wait_for_log("the refused read", |l| vault_read(l, outcome))
        .await;
    assert_eq!(line["vault"], FakeVault::HOST);
    assert_eq!(line["secret"], SECRET_NAME);
    assert_eq!(line["level"], "ERROR");
    let reply = app.get("/ready").await;
    let (code, body) = (reply.status, reply.json());
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["key_vault"], false);
    let reply = app.validate().await;
    let (code, body) = (reply.status, reply.json());
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "CREDENTIALS_UNAVAILABLE");
    app.assert_no_secrets_logged(&[KEY_ONE, ACCESS_TOKEN]);
    line
}

#[tokio::test]
async fn a_missing_secret_is_reported_by_name() {
    let line = refused_read(404, "not_found").await;
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{line}"
    );
}

#[tokio::test]
async fn access_denied_names_the_role_needed() {
    let line = refused_read(403, "forbidden").await;
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
    fx.identity.set(TokenMode::Fail(500));
    let app = fx.app("5m", &[]).await;

    let line = app
        .process
        .wait_for_log("the credential failure", |l| {
            vault_read(l, "credential_error")
        })
        .await;
    assert_eq!(line["vault"], FakeVault::HOST);
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("ManagedIdentityCredential")),
        "{line}"
    );
    let reply = app.get("/ready").await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["key_vault"], false);
    assert_eq!(fx.vault.reads(), 0, "no authorized read without a token");
    app.assert_no_secrets_logged(&[KEY_ONE]);
}

#[tokio::test]
async fn the_vault_certificate_must_chain_to_a_trusted_root() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &["EXTRA_CA_CERTS"]).await;

    app.process
        .wait_for_log("the TLS failure", |l| vault_read(l, "unreachable"))
        .await;
    let status = app.get("/ready").await.status;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fx.vault.reads(), 0);
    assert_eq!(fx.vault.challenges(), 0);
}

#[tokio::test]
async fn a_forced_read_that_returns_the_rejected_key_is_not_retried_with() {
    let fx = Fixture::start(VaultMode::Secret(KEY_ONE.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(fx.vault.reads(), 1);

    // The upstream now wants another key, but the vault still holds the old one.
    fx.upstream.accept_only(HeaderValue::from_static(KEY_TWO));
    let reply = app.validate_as("same-key-1").await;
    let (status, body) = (reply.status, reply.json());
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "UPSTREAM_AUTH_ERROR");
    assert_eq!(fx.vault.reads(), 2, "exactly one forced re-read");
    assert_eq!(
        fx.upstream.keys(),
        [KEY_ONE],
        "the same key is not sent again"
    );
    let line = app
        .process
        .wait_for_log("the forced read", |l| {
            vault_read(l, "success") && l["reason"] == "upstream_rejected_key"
        })
        .await;
    assert_eq!(line["key_changed"], false);
    assert_eq!(line["correlation_id"], "same-key-1");
    // A refused key is still a key: the vault check stays true.
    let reply = app.get("/ready").await;
    assert_eq!(
        reply.json()["checks"]["key_vault"],
        true,
        "{}",
        reply.text()
    );
    app.assert_no_secrets_logged(&[KEY_ONE, KEY_TWO, ACCESS_TOKEN]);
}

#[tokio::test]
async fn a_secret_that_is_no_header_value_is_a_failed_read() {
    const BAD: &str = "rs key with-space-51c0";
    let fx = Fixture::start(VaultMode::Secret(BAD.into()), KEY_ONE, true).await;
    let app = fx.app("5m", &[]).await;
    let line = app
        .process
        .wait_for_log("the refused secret", |l| vault_read(l, "invalid_secret"))
        .await;
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("key vault read failed")),
        "{line}"
    );
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["vault"], FakeVault::HOST);
    assert_eq!(line["secret"], SECRET_NAME);
    assert_eq!(fx.vault.reads(), 1);
    let reply = app.get("/ready").await;
    let (code, body) = (reply.status, reply.json());
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["key_vault"], false);
    let reply = app.validate().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"], "CREDENTIALS_UNAVAILABLE");
    assert!(fx.upstream.keys().is_empty());
    app.assert_no_secrets_logged(&[BAD, "with-space-51c0", ACCESS_TOKEN]);
}
