//! Reading requests: query strings and size-capped JSON bodies.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, BodyStream, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::backend::{BackendError, ByteStream};
use crate::error::ApiError;

/// A parsed query string. [`Query::get`] gives a repeated key's last
/// value, [`Query::all`] every value.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=x%20y` (form encoding: `+` is a space).
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query(pairs)
    }

    /// The (decoded) value; the last one if repeated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A non-empty value.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// Docker's boolean: anything but "", "0", "no", "false", "none".
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        })
    }

    /// Like [`Query::bool`] but with a default when the key is absent.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        if self.get(key).is_some() {
            self.bool(key)
        } else {
            default
        }
    }

    /// An integer; empty counts as absent, garbage is a 400.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid value for {key}: {v:?}"))),
        }
    }
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!("reading request body: {e}"))),
    }
}

/// Reads a JSON body of at most `limit` bytes; an empty body gives the
/// type's default.
pub async fn read_json<T: DeserializeOwned + Default>(
    body: Incoming,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    parse_json(&bytes)
}

/// Parses a JSON body; empty (or whitespace) gives the default.
pub fn parse_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

/// The body as a stream of chunks, for tar uploads (never buffered whole).
pub fn body_stream(body: Incoming) -> ByteStream {
    Box::pin(
        TryStreamExt::map_err(BodyStream::new(body), |e| {
            BackendError::Other(format!("reading request body: {e}"))
        })
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        let q = Query::parse(Some(
            "all=1&name=a%2Fb+c&names=x&names=y&t=&force=false&bad=%zz",
        ));
        assert!(q.bool("all"));
        assert!(!q.bool("force"));
        assert!(!q.bool("missing"));
        assert!(q.bool_or("missing", true));
        assert_eq!(q.get("name"), Some("a/b c"));
        assert_eq!(q.all("names"), ["x", "y"]);
        assert_eq!(q.int("t").unwrap(), None);
        assert_eq!(q.get("bad"), Some("%zz"));
        assert!(Query::parse(Some("t=x")).int("t").is_err());
        assert_eq!(Query::parse(Some("t=10")).int("t").unwrap(), Some(10));
    }

    #[test]
    fn parses_json_bodies() {
        #[derive(serde::Deserialize, Default, Debug)]
        struct B {
            #[serde(default)]
            x: i32,
        }
        assert_eq!(parse_json::<B>(b"").unwrap().x, 0);
        assert_eq!(parse_json::<B>(br#"{"x":2,"other":1}"#).unwrap().x, 2);
        let e = parse_json::<B>(b"{nope").unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)));
    }
}
