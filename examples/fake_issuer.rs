//! A local OpenID Connect issuer for benchmarks and manual runs of AUTH_MODE=entra: the tests' fake issuer
//! (`testkit::openid`, HTTPS on 127.0.0.1 with a test CA made at startup, discovery and JWKS) and one signed
//! access token, shaped like an Entra ID v2 app token, for a caller to send.
//!
//! It prints one JSON line and serves until SIGTERM or SIGINT:
//!
//! ```text
//! {"issuer":"https://localhost:PORT/TENANT/v2.0","ca_file":"/tmp/...pem","audience":"api://applicant-validator",
//!  "role":"Applicants.Validate","token":"eyJ..."}
//! ```
//!
//! `issuer` is AUTH_ISSUER, `ca_file` goes in EXTRA_CA_CERTS, `audience` in AUTH_AUDIENCE, `role` in
//! AUTH_REQUIRED_ROLE, and `token` in an `Authorization: Bearer` header. The token is signed with the tests'
//! fixture key (`tests/fixtures/jwt-signing-key-1.pem`), which guards nothing.
//!
//! ```text
//! cargo run --release --example fake_issuer -- --lifetime-secs 7200
//! ```

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use testkit::openid::{FakeIssuer, TestSigner, now};

#[derive(Debug, Parser)]
#[command(
    name = "fake_issuer",
    version,
    about = "A local OpenID issuer and one signed token"
)]
struct Args {
    /// The token's `aud`.
    #[arg(long, default_value = "api://applicant-validator")]
    audience: String,
    /// The app role the token grants (`roles`).
    #[arg(long, default_value = "Applicants.Validate")]
    role: String,
    /// The calling application's client id (`azp`).
    #[arg(long, default_value = "0f9a3c1e-1111-4c3b-9d7e-000000000001")]
    app_id: String,
    /// Seconds until the token's `exp`.
    #[arg(long, default_value_t = 86_400)]
    lifetime_secs: i64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake_issuer: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let signer = TestSigner::from_pem(
            "key-1",
            include_str!("../tests/fixtures/jwt-signing-key-1.pem"),
        );
        let issuer = FakeIssuer::start(vec![signer.jwk()]).await;
        let now = now();
        // The claims of an Entra v2 app-only token, at about a real one's size (1–2 KB signed), so that what
        // the service does per byte of token is measured at a realistic length.
        let claims = json!({
            "aud": args.audience,
            "iss": issuer.issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + args.lifetime_secs,
            "aio": "k2BgYDD4uN/fLh0vZ1eRq7uS2ZLUeY0sbL9m+4r3cX1a0Sx7Kf6TAA==",
            "azp": args.app_id,
            "azpacr": "1",
            "idp": issuer.issuer(),
            "oid": "7d3f8c2a-5b1e-4f6d-9a0c-2e4b6d8f0a1c",
            "rh": "1.AQkAqgAAAAAAAAAAAAAAAAAAAADh3Yj1WzBBQpT3yVRXa8GJAAA.",
            "roles": [args.role],
            "sub": "7d3f8c2a-5b1e-4f6d-9a0c-2e4b6d8f0a1c",
            "tid": "00000000-0000-0000-0000-0000000000aa",
            "uti": "Xq3vR9kLm0a8bZ1cD2eF3g",
            "ver": "2.0",
            "xms_ftd": "p0M3aWJ2LXNvdXRoYWZyaWNhbm9ydGgtZHNtcw",
        });
        let token = signer.sign(&signer.header(), &claims);
        println!(
            "{}",
            json!({
                "issuer": issuer.issuer(),
                "ca_file": issuer.ca_file().display().to_string(),
                "audience": args.audience,
                "role": args.role,
                "token": token,
            })
        );
        shutdown_signal().await;
        drop(issuer);
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        },
        _ => {
            eprintln!("fake_issuer: cannot install signal handlers; stop with SIGKILL");
            std::future::pending().await
        }
    }
}
