//! The API's own documents, compiled into the binary: the OpenAPI description and the HTML docs page.

use bytes::Bytes;
use serde_json::json;

/// This build's version, as /, /health and the OpenAPI document report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const OPENAPI_TEMPLATE: &str = include_str!("openapi.json");
pub const DOCS_HTML: &str = include_str!("docs.html");

/// The OpenAPI document with this build's version filled in.
pub fn openapi_document() -> Bytes {
    let mut doc: serde_json::Value =
        serde_json::from_str(OPENAPI_TEMPLATE).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = json!(VERSION);
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_template_is_valid_json_with_the_version() {
        let doc: serde_json::Value = serde_json::from_slice(&openapi_document()).expect("json");
        assert_eq!(doc["info"]["version"], VERSION);
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    }
}
