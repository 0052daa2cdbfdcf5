//! List paging (AIP-158): `page_size`, `page_token`, `next_page_token`.
//!
//! Lists are in key order (a name, or a pod's namespace and name). A page token carries the
//! kind, the request's filters and the last key returned, base64url-encoded; the next page
//! starts after that key. An object that exists during a whole listing is therefore returned
//! exactly once, whatever is created or deleted meanwhile (keyset paging, not offsets). The
//! token is opaque to clients: its format may change between versions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tonic::Status;

use super::error::Violations;

/// The page size when a request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// The largest page; a larger `page_size` is read as this (AIP-158 coerces, it does not refuse).
pub const MAX_PAGE_SIZE: usize = 1000;

/// Marks the token's format, so a token of another version is refused rather than misread.
const TOKEN_VERSION: &str = "ovnvip-page-1";
/// Separates the token's parts; no name, namespace or filter contains it.
const SEPARATOR: char = '\0';

/// A validated page request: how many objects, and the key to start after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1..=MAX_PAGE_SIZE.
    pub size: usize,
    /// The parts of the last key of the previous page (one for names, two for pods); empty on
    /// the first page.
    pub after: Vec<String>,
}

fn invalid(field: &str, description: &str) -> Status {
    let mut violations = Violations::new();
    violations.add(field, description);
    violations
        .into_result()
        .err()
        .unwrap_or_else(|| Status::invalid_argument(format!("{field}: {description}")))
}

/// Reads `page_size` and `page_token` of a `kind` listing with `filters`; INVALID_ARGUMENT
/// naming `page_size` for a negative size, or `page_token` for a token that is not one this
/// daemon gave for the same kind and filters. `key_parts` is how many parts the kind's key has.
pub fn parse(kind: &str, filters: &[&str], key_parts: usize, page_size: i32, page_token: &str) -> Result<Page, Status> {
    let size = match page_size {
        size if size < 0 => return Err(invalid("page_size", "must not be negative")),
        0 => DEFAULT_PAGE_SIZE,
        size => (size as usize).min(MAX_PAGE_SIZE),
    };
    if page_token.is_empty() {
        return Ok(Page {
            size,
            after: Vec::new(),
        });
    }
    let bad = || {
        invalid(
            "page_token",
            "is not a page token of this listing (with the same filters)",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split(SEPARATOR).collect();
    let expected = 2 + filters.len() + key_parts;
    if parts.len() != expected
        || parts[0] != TOKEN_VERSION
        || parts[1] != kind
        || parts[2..2 + filters.len()] != *filters
    {
        return Err(bad());
    }
    Ok(Page {
        size,
        after: parts[2 + filters.len()..].iter().map(|part| part.to_string()).collect(),
    })
}

/// The token of the page after the one that ended at `last_key`.
pub fn token(kind: &str, filters: &[&str], last_key: &[&str]) -> String {
    let parts: Vec<&str> = [TOKEN_VERSION, kind]
        .into_iter()
        .chain(filters.iter().copied())
        .chain(last_key.iter().copied())
        .collect();
    URL_SAFE_NO_PAD.encode(parts.join(&SEPARATOR.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_coerce_and_refuse_negative() {
        assert_eq!(parse("vips", &[], 1, 0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(parse("vips", &[], 1, 7, "").unwrap().size, 7);
        assert_eq!(parse("vips", &[], 1, 5000, "").unwrap().size, MAX_PAGE_SIZE);
        let error = parse("vips", &[], 1, -1, "").unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("page_size"), "{}", error.message());
    }

    #[test]
    fn tokens_round_trip_and_bind_kind_and_filters() {
        let token = token("pods", &["default"], &["default", "web-0"]);
        let page = parse("pods", &["default"], 2, 0, &token).unwrap();
        assert_eq!(page.after, vec!["default".to_string(), "web-0".to_string()]);
        for (kind, filters, parts, bad) in [
            ("pods", &["other"][..], 2, token.as_str()),
            ("vips", &["default"][..], 2, token.as_str()),
            ("pods", &["default"][..], 2, "not a token!"),
            ("pods", &["default"][..], 2, "Zm9v"),
        ] {
            let error = parse(kind, filters, parts, 0, bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains("page_token"), "{}", error.message());
        }
    }
}
