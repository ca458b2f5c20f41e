//! The built binary: exit codes, configuration errors, the healthcheck subcommand and logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use testkit::riskshield::{FakeRiskShield, Step};
use testkit::server::{Server, closed_port, serve_http};

use crate::support::{App, BIN, TestServer, config};

/// Runs the binary to completion: exit code, stdout, stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    testkit::process::run(BIN, args, env).await
}

#[tokio::test]
async fn version_and_help() {
    let (code, out, _) = run(&["--version"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        concat!("applicant-validator ", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["serve", "--help"], &[]).await;
    assert_eq!(code, 0);
    for var in [
        "HOST",
        "PORT",
        "KEY_VAULT_URL",
        "RISKSHIELD_API_URL",
        "REQUEST_TIMEOUT",
        "CORS_ORIGINS",
        "DEMO_MODE",
        "EXTRA_CA_CERTS",
    ] {
        assert!(out.contains(&format!("env: {var}")), "--help lacks {var}");
    }
    let (code, out, _) = run(&["--help"], &[]).await;
    assert_eq!(code, 0);
    for var in [
        "KEY_VAULT_URL",
        "RISKSHIELD_API_KEY",
        "RATE_LIMIT_PER_MINUTE",
        "MAX_CONNECTIONS",
    ] {
        assert!(out.contains(var), "top-level --help lacks {var}");
    }
    let (code, out, _) = run(&["healthcheck", "--help"], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("--timeout") && out.contains("--url"));
    let (code, help_serve, _) = run(&["help", "serve"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        help_serve.contains("env: RISKSHIELD_API_KEY"),
        "{help_serve}"
    );
}

#[tokio::test]
async fn configuration_errors_exit_64_naming_every_variable() {
    let (code, _, err) = run(
        &["serve"],
        &[
            ("PORT", "http"),
            ("LOG_LEVEL", "chatty"),
            ("RISKSHIELD_TIMEOUT", "forever"),
            ("KEY_VAULT_URL", "http://v.example"),
        ],
    )
    .await;
    assert_eq!(code, 64, "{err}");
    for var in ["PORT", "LOG_LEVEL", "RISKSHIELD_TIMEOUT", "KEY_VAULT_URL"] {
        assert!(
            err.lines().any(|l| l.contains(var)),
            "{var} not named in {err}"
        );
    }
    assert!(err.lines().count() >= 4);
}

#[tokio::test]
async fn a_flag_wins_over_its_variable() {
    let (code, _, err) = run(&["serve", "--port", "nope"], &[("PORT", "8080")]).await;
    assert_eq!(code, 64);
    assert!(err.contains("PORT") && err.contains("nope"), "{err}");
}

#[tokio::test]
async fn demo_mode_is_refused_in_prod() {
    for env in [
        vec![("ENVIRONMENT", "prod")],
        vec![
            ("ENVIRONMENT", "production"),
            ("DEMO_MODE", "true"),
            ("RISKSHIELD_API_KEY", "k"),
        ],
    ] {
        let (code, _, err) = run(&["serve"], &env).await;
        assert_eq!(code, 64, "{env:?}");
        assert!(err.contains("DEMO_MODE"), "{err}");
    }
}

#[tokio::test]
async fn plain_http_upstream_is_refused_in_prod() {
    let (code, _, err) = run(
        &["serve"],
        &[
            ("ENVIRONMENT", "prod"),
            ("RISKSHIELD_API_KEY", "k"),
            ("RISKSHIELD_API_URL", "http://rs.example/v1"),
            ("ALLOW_INSECURE_UPSTREAM", "true"),
        ],
    )
    .await;
    assert_eq!(code, 64);
    assert!(err.contains("RISKSHIELD_API_URL"), "{err}");
}

#[tokio::test]
async fn usage_errors_exit_64_with_the_problem_and_the_usage_line() {
    for (args, names, usage) in [
        (
            &["serve", "--no-such-flag"][..],
            "'--no-such-flag'",
            "Usage: applicant-validator serve [OPTIONS]",
        ),
        (
            &["serve", "--port"],
            "'--port <PORT>'",
            "Usage: applicant-validator serve [OPTIONS]",
        ),
        (
            &["frobnicate"],
            "'frobnicate'",
            "Usage: applicant-validator <COMMAND>",
        ),
        (
            &["help", "serve", "extra"],
            "'extra'",
            "Usage: applicant-validator serve [OPTIONS]",
        ),
        (
            &[],
            "requires a subcommand",
            "Usage: applicant-validator <COMMAND>",
        ),
    ] {
        let (code, out, err) = run(args, &[]).await;
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(err.contains(usage), "{args:?}: {err}");
    }
    // Without a subcommand, the subcommands are named too.
    let (_, _, err) = run(&[], &[]).await;
    assert!(err.contains("serve, healthcheck, diagnose"), "{err}");
}

/// The configuration `diagnose` would run with, from its `config` check: a flag, its variable, or the default.
async fn effective_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut argv = vec!["diagnose", "--json"];
    argv.extend_from_slice(args);
    let (code, out, err) = run(&argv, env).await;
    assert_eq!(code, 0, "{args:?} {env:?}: {err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).expect("diagnose --json prints JSON");
    report["checks"][0]["detail"]
        .as_str()
        .expect("the config check has a detail")
        .to_owned()
}

#[tokio::test]
async fn settings_come_from_the_flag_else_the_variable_else_the_default() {
    let from_env = effective_config(&[], &[("RISKSHIELD_MAX_ATTEMPTS", "7")]).await;
    assert!(from_env.contains("attempts 7,"), "{from_env}");
    let flag_wins = effective_config(
        &["--riskshield-max-attempts", "2"],
        &[("RISKSHIELD_MAX_ATTEMPTS", "7")],
    )
    .await;
    assert!(flag_wins.contains("attempts 2,"), "{flag_wins}");
    // An empty flag means what an empty variable means: the default, not the variable.
    let empty_flag = effective_config(
        &["--riskshield-max-attempts="],
        &[("RISKSHIELD_MAX_ATTEMPTS", "7")],
    )
    .await;
    assert!(empty_flag.contains("attempts 3,"), "{empty_flag}");
    let empty_env = effective_config(&[], &[("RISKSHIELD_MAX_ATTEMPTS", "")]).await;
    assert!(empty_env.contains("attempts 3,"), "{empty_env}");
}

#[tokio::test]
async fn an_api_key_given_as_a_flag_is_warned_about_and_never_echoed() {
    let (code, _, err) = run(
        &[
            "serve",
            "--riskshield-api-key",
            "flag-key-value",
            "--port",
            "nope",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("visible to every user"), "{err}");
    assert!(!err.contains("flag-key-value"), "{err}");
    let (_, _, err) = run(&["serve", "--port", "nope"], &[("RISKSHIELD_API_KEY", "k")]).await;
    assert!(!err.contains("visible to every user"), "{err}");
}

#[tokio::test]
async fn healthcheck_passes_against_a_healthy_server() {
    let s = TestServer::start(config(&[])).await;
    let port = s.addr.port().to_string();
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &port)]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &port), ("HOST", "0.0.0.0")]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(&["healthcheck", "--url", &s.url("/health")], &[]).await;
    assert_eq!(code, 0);
    // Proxy variables are never consulted.
    let (code, _, _) = run(
        &["healthcheck"],
        &[
            ("PORT", &port),
            ("http_proxy", "http://127.0.0.1:1"),
            ("HTTP_PROXY", "http://127.0.0.1:1"),
        ],
    )
    .await;
    assert_eq!(code, 0);
    // Nor with a proxy that is there and would answer 200 for anything.
    let proxy = DecoyProxy::start().await;
    let (code, _, err) = run(&["healthcheck"], &proxy.env(&[("PORT", &port)])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        proxy.connections(),
        0,
        "the healthcheck went through the proxy"
    );
    // Anything but 200 fails.
    let (code, _, err) = run(&["healthcheck", "--url", &s.url("/nope")], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_listens() {
    // Held, not released: nothing can start listening there while the test runs.
    let closed = closed_port();
    let addr = closed.addr();
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &addr.port().to_string())]).await;
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_listens_even_if_a_proxy_would_answer() {
    // A probe that consulted the proxy variables would get the decoy's 200 and pass.
    let closed = closed_port();
    let port = closed.addr().port().to_string();
    let proxy = DecoyProxy::start().await;
    let (code, _, err) = run(&["healthcheck"], &proxy.env(&[("PORT", &port)])).await;
    assert_eq!(code, 1, "{err}");
    let url = format!("http://{}/health", closed.addr());
    let (code, _, err) = run(&["healthcheck", "--url", &url], &proxy.env(&[])).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        proxy.connections(),
        0,
        "the healthcheck went through the proxy"
    );
    // The decoy does answer 200 to a proxied request, so a probe using it would have passed.
    let proxied = testkit::client::send(
        http::Method::GET,
        &format!("http://{}/", proxy.addr()),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(proxied.status, http::StatusCode::OK);
}

/// An HTTP proxy that must never be used: it answers 200 `{"status":"healthy"}` to any request and counts
/// the connections it accepted.
struct DecoyProxy {
    server: Server,
    url: String,
    connections: Arc<AtomicUsize>,
}

impl DecoyProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let server = Server::spawn(listener, move |stream| {
            counted.fetch_add(1, Ordering::SeqCst);
            serve_http(
                stream,
                hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"status":"healthy"}"#,
                        )),
                    ))
                }),
            )
        })
        .expect("the proxy's address");
        let url = format!("http://{}", server.addr());
        Self {
            server,
            url,
            connections,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// `extra` plus every proxy variable an HTTP client might read, pointing at the decoy.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .into_iter()
        .map(|name| (name, self.url.as_str()))
        .collect();
        env.extend_from_slice(extra);
        env
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_server_that_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    // Accept connections and hold them open without answering.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let (code, _, err) = run(&["healthcheck", "--timeout", "300ms"], &[("PORT", &port)]).await;
    assert_eq!(code, 1);
    assert!(err.contains("within"), "{err}");
    holder.abort();
}

#[tokio::test]
async fn healthcheck_argument_errors_exit_1() {
    for args in [
        &["healthcheck", "--bogus"][..],
        &["healthcheck", "--timeout"],
        &["healthcheck", "--timeout", "1s", "--timeout", "2s"],
        &["healthcheck", "--timeout", "soon"],
        &["healthcheck", "--url", "https://127.0.0.1/"],
    ] {
        let (code, _, err) = run(args, &[]).await;
        assert_eq!(code, 1, "{args:?}: {err}");
    }
    let (_, _, err) = run(&["healthcheck", "--bogus"], &[]).await;
    assert!(
        err.contains("'--bogus'") && err.contains("Usage: applicant-validator healthcheck"),
        "{err}"
    );
    let (code, _, _) = run(&["healthcheck"], &[("PORT", "not-a-port")]).await;
    assert_eq!(code, 1);
}

#[tokio::test]
async fn logs_are_json_lines_without_secrets_or_personal_data() {
    let fake = FakeRiskShield::start(Step::ok(42, "MEDIUM")).await;
    let url = fake.url();
    let mut app = App::start(&[
        ("RISKSHIELD_API_KEY", "secret-key-value"),
        ("RISKSHIELD_API_URL", url.as_str()),
    ])
    .await;
    let reply = app.validate_as("log-test-1").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    app.process.signal("TERM");
    app.process.wait().await;
    // Every line is JSON (json_lines fails the test otherwise).
    let lines = app.process.json_lines();
    let request_line = lines
        .iter()
        .find(|l| l["message"] == "request" && l["correlation_id"] == "log-test-1")
        .expect("a request line");
    assert_eq!(request_line["method"], "POST");
    assert_eq!(request_line["path"], "/api/v1/validate");
    assert_eq!(request_line["status"], 200);
    assert!(request_line["duration_ms"].is_number());
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "upstream attempt" && l["correlation_id"] == "log-test-1")
    );
    app.assert_no_secrets_logged(&["secret-key-value", "Thandi", "Nkosi", "9001011234088"]);
}

#[tokio::test]
async fn an_id_number_in_a_path_is_masked_in_the_request_log() {
    let mut app = App::start(&[]).await;
    for (path, id) in [
        ("/x/9001011234088", "masked-path-1"),
        ("/x/%39001011234088", "masked-path-2"),
    ] {
        let reply = testkit::client::send(
            http::Method::GET,
            &app.url(path),
            &[("x-correlation-id", id)],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(reply.status, http::StatusCode::NOT_FOUND);
    }
    app.process.signal("TERM");
    app.process.wait().await;
    let lines = app.process.json_lines();
    let logged_path = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["correlation_id"] == id)
            .map(|l| l["path"].clone())
            .unwrap_or_else(|| panic!("no request line for {id}: {lines:?}"))
    };
    assert_eq!(logged_path("masked-path-1"), "/x/*************");
    assert_eq!(logged_path("masked-path-2"), "/x/***************");
    // Neither the number nor its tail after an escaped first digit is anywhere in the output.
    app.assert_no_secrets_logged(&["9001011234088", "001011234088"]);
}
