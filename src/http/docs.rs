//! The API's own documents, compiled into the binary: the OpenAPI description and the HTML docs page.

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;

/// This build's version, as /, /health and the OpenAPI document report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The OpenAPI description as written, indented for people.
const OPENAPI_SOURCE: &[u8] = include_bytes!("openapi.json");
/// The same description without its indentation, made while compiling: the binary carries only this, 7.9 KB
/// smaller than the source (docs/container.md, "Binary size").
static OPENAPI_TEMPLATE: [u8; compact_len(OPENAPI_SOURCE)] = compact(OPENAPI_SOURCE);
/// The docs page as written, with one `<!--if auth-->…<!--else-->…<!--end-->` block that [`DocsPage::render`]
/// resolves for the running configuration.
const DOCS_TEMPLATE: &str = include_str!("docs.html");

/// The OpenAPI document with this build's version filled in.
pub fn openapi_document() -> Bytes {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&OPENAPI_TEMPLATE).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = json!(VERSION);
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

/// Whether `byte`, the next of a JSON text, is kept: everything inside strings, and outside them everything
/// but the whitespace JSON allows between tokens. `in_string` and `escaped` carry the scan's state from byte
/// to byte.
const fn keep(byte: u8, in_string: &mut bool, escaped: &mut bool) -> bool {
    if *in_string {
        if *escaped {
            *escaped = false;
        } else if byte == b'\\' {
            *escaped = true;
        } else if byte == b'"' {
            *in_string = false;
        }
        return true;
    }
    if byte == b'"' {
        *in_string = true;
    }
    !matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Writes the bytes of `json` that [`keep`] keeps to the front of `out`, as many as fit, and returns how many
/// there are: with an empty `out` it only counts them.
const fn scan(json: &[u8], out: &mut [u8]) -> usize {
    let (mut in_string, mut escaped) = (false, false);
    let (mut i, mut kept) = (0, 0);
    while i < json.len() {
        if keep(json[i], &mut in_string, &mut escaped) {
            if kept < out.len() {
                out[kept] = json[i];
            }
            kept += 1;
        }
        i += 1;
    }
    kept
}

/// How many bytes [`compact`] keeps of `json`.
const fn compact_len(json: &[u8]) -> usize {
    scan(json, &mut [])
}

/// `json` without the whitespace between its tokens (the same document to any JSON reader), evaluated at
/// compile time. `N` must be [`compact_len`] of `json`: any other length fails the build rather than cut the
/// document short or pad it.
const fn compact<const N: usize>(json: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    assert!(
        scan(json, &mut out) == N,
        "the array's length is not the compact length"
    );
    out
}

/// The docs page as served, built once at startup: its "Try it" form asks for a bearer token only when
/// caller authentication is on, since the service ignores one otherwise and an unused secret field invites
/// pasting tokens for nothing. That field is plain text rather than a password field, so that no browser
/// offers to keep the token in its password manager; the form's `autocomplete="off"` keeps every value out of
/// the browser's form history.
#[derive(Debug, Clone)]
pub struct DocsPage {
    pub html: Bytes,
    /// Lets exactly the page's own inline script and style run and its form talk only to this origin, so
    /// nothing injected into the page could run or send what a user typed elsewhere. The hashes are
    /// computed from the page itself, so editing the script cannot leave a stale policy behind.
    pub csp: HeaderValue,
}

impl DocsPage {
    pub fn render(auth_on: bool) -> Self {
        let html = resolve_auth_block(DOCS_TEMPLATE, auth_on);
        let csp = HeaderValue::from_str(&content_security_policy(&html))
            // Not reachable (the policy is ASCII); without a policy the page must not run anything at all.
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
        Self {
            html: Bytes::from(html),
            csp,
        }
    }
}

/// The template with its auth block resolved: the part before `<!--else-->` when auth is on, the part after
/// it when off. A template without the block is served as it is.
fn resolve_auth_block(template: &str, auth_on: bool) -> String {
    let block = template
        .split_once("<!--if auth-->")
        .and_then(|(before, rest)| {
            let (on, rest) = rest.split_once("<!--else-->")?;
            let (off, after) = rest.split_once("<!--end-->")?;
            Some((before, on, off, after))
        });
    match block {
        Some((before, on, off, after)) => {
            let chosen = if auth_on { on } else { off };
            // The block's own line breaks: drop the one after each marker so no blank line is left.
            let chosen = chosen.strip_prefix('\n').unwrap_or(chosen);
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{before}{chosen}{after}")
        }
        None => template.to_owned(),
    }
}

fn content_security_policy(page: &str) -> String {
    let sources = |tag| {
        inline_blocks(page, tag)
            .map(|block| format!(" 'sha256-{}'", sha256_base64(block)))
            .collect::<String>()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; form-action 'none'; \
         base-uri 'none'; frame-ancestors 'none'",
        sources("script"),
        sources("style"),
    )
}

/// The text of each `<tag>…</tag>` element in `page`, exactly as a browser hashes it for a CSP source.
fn inline_blocks<'a>(page: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = page;
    std::iter::from_fn(move || {
        let (_, after) = rest.split_once(open.as_str())?;
        let (block, next) = after.split_once(close.as_str())?;
        rest = next;
        Some(block)
    })
}

/// SHA-256 in standard, padded base64, the form CSP hash sources take.
fn sha256_base64(text: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
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

    #[test]
    fn the_compiled_openapi_document_is_the_source_without_its_whitespace() {
        let source: serde_json::Value = serde_json::from_slice(OPENAPI_SOURCE).expect("source");
        let compiled: serde_json::Value =
            serde_json::from_slice(&OPENAPI_TEMPLATE).expect("compiled");
        assert_eq!(compiled, source);
        // A JSON string cannot hold a raw line break or tab, so any in the text stood between tokens.
        assert!(
            !OPENAPI_TEMPLATE
                .iter()
                .any(|byte| matches!(byte, b'\n' | b'\r' | b'\t'))
        );
        assert!(OPENAPI_TEMPLATE.len() < OPENAPI_SOURCE.len());
    }

    #[test]
    fn compact_keeps_strings_whole_and_drops_only_whitespace_between_tokens() {
        const JSON: &[u8] = b"{ \"a b\" :\t[ 1 ,\r\n 2 ],\n \"q \\\" \\\\\" : \"x\" }";
        const COMPACT: [u8; compact_len(JSON)] = compact(JSON);
        assert_eq!(
            std::str::from_utf8(&COMPACT),
            Ok("{\"a b\":[1,2],\"q \\\" \\\\\":\"x\"}")
        );
    }

    #[test]
    fn sha256_base64_matches_known_digests() {
        // FIPS 180-2 test vectors, in the base64 a CSP hash source uses.
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            sha256_base64("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn the_auth_block_is_resolved_both_ways_and_no_marker_is_left() {
        let on = resolve_auth_block(DOCS_TEMPLATE, true);
        let off = resolve_auth_block(DOCS_TEMPLATE, false);
        for page in [&on, &off] {
            assert!(!page.contains("<!--if auth-->") && !page.contains("<!--else-->"));
            assert!(!page.contains("<!--end-->"));
        }
        assert!(on.contains(r#"name="token""#));
        assert!(!off.contains(r#"name="token""#));
        assert!(off.contains("Caller authentication is off"));
        assert_eq!(resolve_auth_block("plain", true), "plain");
    }

    #[test]
    fn the_policy_hashes_every_inline_script_and_style() {
        let page = DocsPage::render(false);
        let html = std::str::from_utf8(&page.html).expect("utf-8");
        let csp = page.csp.to_str().expect("ascii");
        // Every <script or <style in the page must be a plain inline block the policy names; one with
        // attributes (or a src) would not be hashed here and the browser would refuse it.
        for tag in ["script", "style"] {
            let blocks: Vec<&str> = inline_blocks(html, tag).collect();
            assert_eq!(
                blocks.len(),
                html.matches(&format!("<{tag}")).count(),
                "{tag}"
            );
            assert_eq!(blocks.len(), 1, "{tag}");
            for block in blocks {
                assert!(csp.contains(&format!("'sha256-{}'", sha256_base64(block))));
            }
        }
        assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!csp.contains("unsafe"));
    }
}
