//! Just enough `multipart/form-data` (RFC 7578) for `POST /v1/files`.
//!
//! Written here rather than pulled in (axum's `multipart` feature brings
//! `multer`): an upload is a handful of parts, already in memory, and the
//! parts are sliced out of the body without copying.

use bytes::Bytes;

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The field name (`purpose`, `file`).
    pub name: String,
    /// The file name, for file fields.
    pub filename: Option<String>,
    /// The field's bytes.
    pub data: Bytes,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
}

/// Where `needle` first occurs in `hay` at or after `from`.
pub(crate) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The value of parameter `key` in a `Content-Disposition` header value
/// (`form-data; name="file"; filename="in.jsonl"`), quotes and escapes removed.
fn disposition_param(value: &str, key: &str) -> Option<String> {
    let mut rest = value;
    loop {
        // Skip to the next parameter.
        let semi = rest.find(';')?;
        rest = rest[semi + 1..].trim_start();
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (val, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if name.eq_ignore_ascii_case(key) {
            return Some(val);
        }
        rest = tail;
    }
}

/// The parts of `body`, delimited by `boundary`.
pub(crate) fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, &'static str> {
    const MALFORMED: &str = "The multipart/form-data body is malformed.";
    let delim = format!("--{boundary}").into_bytes();
    let mut next_delim = b"\r\n".to_vec();
    next_delim.extend_from_slice(&delim);
    let mut pos = if body.starts_with(&delim) {
        0
    } else {
        // A preamble ends with CRLF before the first delimiter.
        find(body, &next_delim, 0).ok_or(MALFORMED)? + 2
    };
    let mut parts = Vec::new();
    loop {
        let mut p = pos + delim.len();
        if body[p..].starts_with(b"--") {
            return Ok(parts);
        }
        while matches!(body.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        if !body[p..].starts_with(b"\r\n") {
            return Err(MALFORMED);
        }
        p += 2;
        let (headers, data_start) = if body[p..].starts_with(b"\r\n") {
            (&body[p..p], p + 2)
        } else {
            let end = find(body, b"\r\n\r\n", p).ok_or(MALFORMED)?;
            (&body[p..end], end + 4)
        };
        let headers = std::str::from_utf8(headers).map_err(|_| MALFORMED)?;
        let disposition = headers
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .map(|(_, v)| v.trim())
            .ok_or(MALFORMED)?;
        let name = disposition_param(disposition, "name").ok_or(MALFORMED)?;
        let filename = disposition_param(disposition, "filename");
        let end = find(body, &next_delim, data_start).ok_or(MALFORMED)?;
        parts.push(Part {
            name,
            filename,
            data: body.slice(data_start..end),
        });
        pos = end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc123").as_deref(),
            Some("abc123")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=\"x y\"").as_deref(),
            Some("x y")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn parts_are_sliced_out() {
        let body = Bytes::from_static(
            b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B\r\n\
              Content-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".jsonl\"\r\n\
              Content-Type: application/jsonl\r\n\r\n{\"x\":1}\r\n{\"x\":2}\n\r\n--B--\r\n",
        );
        let parts = parse(&body, "B").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(parts[0].filename, None);
        assert_eq!(&parts[0].data[..], b"batch");
        assert_eq!(parts[1].name, "file");
        assert_eq!(parts[1].filename.as_deref(), Some("a \"b\".jsonl"));
        assert_eq!(&parts[1].data[..], b"{\"x\":1}\r\n{\"x\":2}\n");
    }

    #[test]
    fn truncated_bodies_are_refused() {
        let body = Bytes::from_static(
            b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end",
        );
        assert!(parse(&body, "B").is_err());
        assert!(parse(&Bytes::from_static(b"nothing"), "B").is_err());
    }

    #[test]
    fn find_finds() {
        assert_eq!(find(b"abcabd", b"abd", 0), Some(3));
        assert_eq!(find(b"abcabd", b"abd", 4), None);
        assert_eq!(find(b"ab", b"abc", 0), None);
    }
}
