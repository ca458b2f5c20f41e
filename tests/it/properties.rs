//! Property tests: whatever the body, headers, path or method, the server answers with a non-5xx status,
//! the contract's JSON error shape, and a correlation id — it never panics or drops the request.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use proptest::prelude::*;
use testkit::client::exchange;

use crate::support::{TestServer, config};

fn header_strategy() -> impl Strategy<Value = (String, Vec<u8>)> {
    let names = prop::sample::select(vec![
        "content-type",
        "content-length-x",
        "x-correlation-id",
        "origin",
        "accept",
        "x-forwarded-for",
        "access-control-request-method",
        "x-custom",
    ]);
    // Visible ASCII, spaces, tabs and obs-text bytes: everything a header value may carry.
    let value = prop::collection::vec(
        prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
        0..200,
    );
    (names.prop_map(str::to_owned), value)
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let field_value = prop_oneof![
        any::<String>().prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        "[0-9]{0,20}".prop_map(serde_json::Value::String),
        "\\PC{0,120}".prop_map(serde_json::Value::String),
    ];
    let object = prop::collection::vec(
        (
            prop::sample::select(vec!["firstName", "lastName", "idNumber", "other"]),
            field_value,
        ),
        0..5,
    )
    .prop_map(|fields| {
        let map: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&map).unwrap_or_default()
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), object]
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/",
            "/validate",
            "/api/v1/validate",
            "/health",
            "/ready",
            "/openapi.json",
            "/docs",
            "/metrics"
        ])
        .prop_map(str::to_owned),
        "/[a-zA-Z0-9%._~/-]{0,64}",
    ]
}

fn method_strategy() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::HEAD,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_input_produces_a_5xx(
        method in method_strategy(),
        path in path_strategy(),
        json_content_type in any::<bool>(),
        headers in prop::collection::vec(header_strategy(), 0..4),
        body in body_strategy(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let server = TestServer::start(config(&[("MAX_BODY_BYTES", "256"), ("ID_NUMBER_STRICT", "true")])).await;
            let mut builder = Request::builder().method(method.clone()).uri(server.url(&path));
            if json_content_type {
                builder = builder.header("content-type", "application/json");
            }
            for (name, value) in &headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_bytes(value)) {
                    builder = builder.header(name, value);
                }
            }
            let request = builder.body(Full::new(Bytes::from(body.clone()))).expect("request");
            let reply = exchange(request).await.expect("the server answers");
            let status = reply.status;
            let has_id = reply.headers.contains_key("x-correlation-id");
            let bytes = reply.body;
            server.stop().await;
            prop_assert!(status.as_u16() < 500, "{method} {path} -> {status}");
            prop_assert!(has_id);
            if status.is_client_error() && method != Method::HEAD {
                let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
                prop_assert!(json["error"].is_string() && json["message"].is_string() && json["correlationId"].is_string());
            }
            Ok(())
        })?;
    }
}
