//! S3 wire formats read from a server's answers: the `Content-Range` of a ranged GET and
//! the XML body of an error. The server may be hostile (the storage platform is a bucket
//! writer in SECURITY.md §1), so these parse any input without panics (the
//! `s3_responses` fuzz target), and an answer that breaks the format reads as absent,
//! never as a guess.
//!
//! Public only for the fuzz targets; not part of the library's API.

use super::ContentRange;

/// `bytes START-END/TOTAL` -> (range, total). `None` for anything else, including
/// `bytes */TOTAL` and ranges that do not lie inside the object (`START <= END < TOTAL`).
pub fn parse_content_range(v: &str) -> Option<(ContentRange, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let r = ContentRange {
        start: start.trim().parse().ok()?,
        end: end.trim().parse().ok()?,
    };
    let total: u64 = total.trim().parse().ok()?;
    (r.start <= r.end && r.end < total).then_some((r, total))
}

/// `<Code>` and `<Message>` of an S3 XML error body (either may be missing: empty).
pub fn parse_error_body(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        text.find(&open)
            .and_then(|i| {
                let rest = &text[i + open.len()..];
                rest.find(&close).map(|j| unescape_xml(rest[..j].trim()))
            })
            .unwrap_or_default()
    };
    (field("Code"), field("Message"))
}

/// XML's five predefined entities; `&amp;` last, so `&amp;lt;` stays `&lt;`.
fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_inside_the_object_only() {
        assert_eq!(
            parse_content_range("bytes 10-19/1000"),
            Some((ContentRange { start: 10, end: 19 }, 1000))
        );
        assert_eq!(
            parse_content_range(" bytes 0-0/1 "),
            Some((ContentRange { start: 0, end: 0 }, 1))
        );
        for bad in [
            "bytes */1000",
            "bytes 20-10/1000",
            "bytes 0-1000/1000",
            "bytes 0-9/*",
            "bytes 0-9",
            "items 0-9/10",
            "bytes -1-9/10",
            "bytes 0-18446744073709551616/18446744073709551617",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code>\
            <Message>At least one of the pre-conditions you specified did not hold &amp; so</Message>\
            <Resource>/b/k</Resource></Error>";
        let (code, message) = parse_error_body(body);
        assert_eq!(code, "PreconditionFailed");
        assert_eq!(
            message,
            "At least one of the pre-conditions you specified did not hold & so"
        );
        assert_eq!(parse_error_body(b""), (String::new(), String::new()));
        assert_eq!(
            parse_error_body(b"<Code>Half"),
            (String::new(), String::new())
        );
        assert_eq!(parse_error_body(b"<Code>&amp;lt;</Code>").0, "&lt;");
    }

    proptest::proptest! {
        // The error body comes from the server: any bytes give an answer, never a panic.
        #[test]
        fn any_error_body_parses(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                 code in "[A-Za-z<>&;/]{0,12}") {
            let _ = parse_error_body(&body);
            let mut framed = b"<Error><Code>".to_vec();
            framed.extend_from_slice(code.as_bytes());
            framed.extend_from_slice(b"</Code>");
            framed.extend_from_slice(&body);
            let (parsed, _) = parse_error_body(&framed);
            if !code.contains('<') && !code.contains('&') {
                proptest::prop_assert_eq!(parsed, code.trim());
            }
        }

        #[test]
        fn content_ranges_round_trip(start in 0u64..u64::MAX, len in 1u64..1 << 40, extra in 0u64..1 << 40) {
            let end = start.saturating_add(len - 1);
            let Some(total) = end.checked_add(1 + extra) else { return Ok(()) };
            let r = ContentRange { start, end };
            proptest::prop_assert_eq!(
                parse_content_range(&format!("bytes {start}-{end}/{total}")),
                Some((r, total))
            );
        }
    }
}
