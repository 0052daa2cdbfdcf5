//! Framing of JSON-RPC on a byte stream. OVSDB sends concatenated JSON values with no delimiter,
//! so the decoder finds where each top-level value ends by tracking nesting depth outside strings
//! (minding escapes), and remembers how far it scanned so a multi-megabyte dump split over many
//! reads is scanned once, not once per read.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use super::error::OvsdbError;

/// The largest single message accepted; an initial NB dump of 100,000 ports is ~50 MB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Read-buffer size kept after a message: the allocation a larger message was read into is not
/// reused for the following reads (`BytesMut` would reclaim it once the message is dropped), so it
/// is freed with that message.
const RETAINED_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct JsonCodec {
    /// Bytes of the current value already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonCodec {
    pub fn new() -> JsonCodec {
        JsonCodec::default()
    }

    /// Scans forward; returns the length of the first complete value when one is present.
    fn find_end(&mut self, buffer: &[u8]) -> Result<Option<usize>, OvsdbError> {
        let mut position = self.scanned;
        while position < buffer.len() {
            let byte = buffer[position];
            position += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(OvsdbError::Protocol("unbalanced JSON: unexpected close".into()));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.scanned = 0;
                        return Ok(Some(position));
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 => {
                    return Err(OvsdbError::Protocol(format!(
                        "JSON-RPC message must be an object, found byte {:?}",
                        byte as char
                    )));
                }
                _ => {}
            }
        }
        self.scanned = position;
        if position > MAX_MESSAGE_BYTES {
            return Err(OvsdbError::Protocol(format!(
                "message larger than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        Ok(None)
    }
}

/// Yields each complete JSON value as its raw bytes; the caller parses only what it needs.
impl Decoder for JsonCodec {
    type Item = bytes::Bytes;
    type Error = OvsdbError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<bytes::Bytes>, OvsdbError> {
        // Leading white space between messages is dropped so it never accumulates.
        if self.depth == 0 && self.scanned == 0 {
            let blank = buffer.iter().take_while(|byte| byte.is_ascii_whitespace()).count();
            buffer.advance(blank);
        }
        match self.find_end(buffer)? {
            Some(length) => {
                let message = buffer.split_to(length).freeze();
                if length > RETAINED_BUFFER_BYTES && buffer.len() <= RETAINED_BUFFER_BYTES {
                    // The buffer grew for one large message (an initial dump): move what follows
                    // it into a fresh buffer, so that allocation is freed with the message instead
                    // of being kept for the connection's life.
                    *buffer = BytesMut::from(&buffer[..]);
                }
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }
}

impl<T: Serialize> Encoder<T> for JsonCodec {
    type Error = OvsdbError;

    fn encode(&mut self, message: T, buffer: &mut BytesMut) -> Result<(), OvsdbError> {
        serde_json::to_writer(buffer.writer(), &message)
            .map_err(|error| OvsdbError::Protocol(format!("cannot encode JSON: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<serde_json::Value>, OvsdbError> {
        let mut codec = JsonCodec::new();
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            while let Some(message) = codec.decode(&mut buffer)? {
                let value = serde_json::from_slice(&message)
                    .map_err(|error| OvsdbError::Protocol(format!("invalid JSON: {error}")))?;
                out.push(value);
            }
        }
        Ok(out)
    }

    #[test]
    fn several_messages_in_one_read() {
        let out = decode_all(&[br#"{"id":1}{"id":2} [3]"#]).unwrap();
        assert_eq!(out, vec![json!({"id":1}), json!({"id":2}), json!([3])]);
    }

    #[test]
    fn strings_with_escaped_quotes_and_braces() {
        let text = br#"{"a":"x\"}{\\","b":"]["}"#;
        let out = decode_all(&[&text[..7], &text[7..]]).unwrap();
        assert_eq!(out, vec![json!({"a": "x\"}{\\", "b": "]["})]);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(decode_all(&[b"}"]).is_err());
        assert!(decode_all(&[b"42"]).is_err());
        assert!(decode_all(&[b"{\"a\": tru}"]).is_err());
    }

    #[test]
    fn multi_megabyte_message_in_small_reads() {
        let big: Vec<_> = (0..100_000)
            .map(|i| json!({"name": format!("p{i}\"}}"), "n": i}))
            .collect();
        let message = json!({"id": 7, "result": big});
        let bytes = serde_json::to_vec(&message).unwrap();
        assert!(bytes.len() > 2_000_000);
        let chunks: Vec<&[u8]> = bytes.chunks(4096).collect();
        assert_eq!(decode_all(&chunks).unwrap(), vec![message]);
    }

    fn arbitrary_message() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(|b| json!(b)),
            "[\\PC\"\\\\{}\\[\\]]{0,12}".prop_map(|s| json!(s)),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"{]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        (any::<u32>(), value).prop_map(|(id, params)| json!({"id": id, "method": "x", "params": [params]}))
    }

    proptest! {
        /// Splitting a stream of messages at arbitrary points decodes the same messages.
        #[test]
        fn random_split_points_decode_the_same(
            messages in prop::collection::vec(arbitrary_message(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
            separators in prop::collection::vec("[ \n]{0,2}", 8),
        ) {
            let mut stream = Vec::new();
            for (index, message) in messages.iter().enumerate() {
                stream.extend(serde_json::to_vec(message).unwrap());
                stream.extend(separators[index % separators.len()].as_bytes());
            }
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&stream[start..point]);
                start = point;
            }
            chunks.push(&stream[start..]);
            prop_assert_eq!(decode_all(&chunks).unwrap(), messages);
        }
    }

    #[test]
    fn a_buffer_grown_for_a_large_message_is_not_kept() {
        let mut codec = JsonCodec::new();
        let large = serde_json::to_vec(&json!({"rows": "x".repeat(4 << 20)})).unwrap();
        let mut buffer = BytesMut::with_capacity(large.len() + 64);
        buffer.extend_from_slice(&large);
        buffer.extend_from_slice(b"{\"id\": 1}{\"id\"");
        let message = codec.decode(&mut buffer).unwrap().unwrap();
        assert_eq!(message.len(), large.len());
        // The rest no longer lives in the large message's allocation (which `BytesMut` would
        // otherwise reclaim and keep once the message is dropped).
        let range = message.as_ptr_range();
        assert!(!range.contains(&buffer.as_ptr()) && buffer.as_ptr() != range.end);
        drop(message);
        // What followed the large message is still there, and the partial one completes.
        assert_eq!(&codec.decode(&mut buffer).unwrap().unwrap()[..], b"{\"id\": 1}");
        buffer.extend_from_slice(b": 2}");
        assert_eq!(&codec.decode(&mut buffer).unwrap().unwrap()[..], b"{\"id\": 2}");
    }
}
