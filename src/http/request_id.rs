//! `x-request-id`: the client's value if it is usable (1 to 128 visible ASCII
//! characters), else a new UUIDv7.

use http::HeaderMap;

pub const HEADER: &str = "x-request-id";

pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_usable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

fn is_usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_usable_id_and_replaces_others() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(from_headers(&headers), "abc-123");
        headers.insert(HEADER, "has space".parse().unwrap());
        assert_ne!(from_headers(&headers), "has space");
        headers.insert(HEADER, "x".repeat(129).parse().unwrap());
        assert_eq!(from_headers(&headers).len(), 36);
    }
}
