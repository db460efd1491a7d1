//! Header compression (RFC 7541) for the server side of a connection: a decoder for the
//! client's header blocks with the limits that keep a hostile block cheap, and an encoder for
//! our responses. The codec itself is `loona-hpack`'s.
//!
//! An HPACK bomb is a small block that names big table entries over and over. Decoded fields
//! are only copied while the list stays within `max_header_list_size` (counted as RFC 9113
//! §6.5.2 says: name, value and 32 bytes per field); past it the block is still decoded, since
//! the table must stay in step with the client's, but nothing more is kept, and the stream gets
//! 431.

use std::ops::Range;

use loona_hpack::{decoder::DecoderError, Decoder, Encoder};

use super::{ErrorCode, H2Error};

/// The dynamic table size we allow the client's encoder (our SETTINGS_HEADER_TABLE_SIZE, the
/// RFC's default).
pub const TABLE_SIZE: usize = 4096;

/// A decoded header list: every name and value in one byte vector.
#[derive(Debug, Default)]
pub struct HeaderList {
    bytes: Vec<u8>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The list was larger than the limit: `fields` holds only a prefix of it.
    pub too_large: bool,
    /// Its size as RFC 9113 §6.5.2 counts it, all of it.
    pub size: usize,
}

impl HeaderList {
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let n = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let v = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.fields.push((n..v, v..self.bytes.len()));
    }
}

pub struct HeaderDecoder {
    inner: Decoder<'static>,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        let mut inner = Decoder::new();
        inner.set_max_allowed_table_size(TABLE_SIZE);
        HeaderDecoder { inner }
    }
}

impl HeaderDecoder {
    /// Decodes one whole header block. A block the codec cannot decode leaves the table out of
    /// step with the client's: a connection error (RFC 9113 §4.3).
    pub fn decode(&mut self, block: &[u8], max_list_size: usize) -> Result<HeaderList, H2Error> {
        let mut list = HeaderList::default();
        let result = self.inner.decode_with_cb(block, |name, value| {
            list.size += name.len() + value.len() + 32;
            if list.size > max_list_size {
                list.too_large = true;
            } else {
                list.push(&name, &value);
            }
        });
        result.map_err(|e| {
            H2Error::connection(
                ErrorCode::CompressionError,
                match e {
                    DecoderError::HeaderIndexOutOfBounds => "HPACK index out of bounds",
                    DecoderError::IntegerDecodingError(_) => "HPACK integer malformed",
                    DecoderError::StringDecodingError(_) => "HPACK string malformed",
                    DecoderError::InvalidMaxDynamicSize => "HPACK table size above ours",
                    DecoderError::SizeUpdateAtEnd => "HPACK size update at the end of a block",
                    _ => "HPACK block malformed",
                },
            )
        })?;
        Ok(list)
    }
}

pub struct HeaderEncoder {
    inner: Encoder<'static>,
    /// The client lowered SETTINGS_HEADER_TABLE_SIZE: the next block must say so first
    /// (RFC 7541 §4.2).
    pending_size_update: Option<usize>,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        HeaderEncoder {
            inner: Encoder::new(),
            pending_size_update: None,
        }
    }
}

impl HeaderEncoder {
    /// The client's SETTINGS_HEADER_TABLE_SIZE. We never use more than the default, so only a
    /// smaller value changes anything.
    pub fn set_peer_table_size(&mut self, size: u32) {
        let size = (size as usize).min(TABLE_SIZE);
        self.inner.set_max_table_size(size);
        self.pending_size_update = Some(size);
    }

    /// Appends the block for `fields` (names already lowercase) to `out`.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        out: &mut Vec<u8>,
    ) {
        if let Some(size) = self.pending_size_update.take() {
            write_integer(out, size, 5, 0x20);
        }
        // Writing to a Vec cannot fail.
        let _ = self.inner.encode_into(fields, out);
    }
}

/// An HPACK integer (RFC 7541 §5.1) with `prefix` bits in the first byte, under `mask`.
fn write_integer(out: &mut Vec<u8>, mut value: usize, prefix: u8, mask: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(mask | value as u8);
        return;
    }
    out.push(mask | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoded(d: &mut HeaderDecoder, block: &str) -> Vec<(String, String)> {
        let list = d.decode(&hex(block), 64 * 1024).unwrap();
        list.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 C.3: requests without Huffman coding, on one connection's table.
    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut d = HeaderDecoder::default();
        let first = pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]);
        assert_eq!(
            decoded(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
            first
        );
        let mut second = first.clone();
        second.push(("cache-control".into(), "no-cache".into()));
        assert_eq!(
            decoded(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865"),
            second
        );
        let third = pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]);
        assert_eq!(
            decoded(
                &mut d,
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"
            ),
            third
        );
    }

    /// RFC 7541 C.4: the same requests with Huffman coding.
    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = HeaderDecoder::default();
        assert_eq!(
            decoded(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")[3],
            (":authority".to_string(), "www.example.com".to_string())
        );
        assert_eq!(
            decoded(&mut d, "8286 84be 5886 a8eb 1064 9cbf")[4],
            ("cache-control".to_string(), "no-cache".to_string())
        );
        assert_eq!(
            decoded(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            )[4],
            ("custom-key".to_string(), "custom-value".to_string())
        );
    }

    /// RFC 7541 C.6: responses with Huffman coding, on a 256-byte table that evicts.
    #[test]
    fn rfc7541_c6_responses_with_huffman_and_eviction() {
        let mut d = HeaderDecoder::default();
        d.inner.set_max_table_size(256);
        let first = decoded(
            &mut d,
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        );
        assert_eq!(
            first,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        let second = decoded(&mut d, "4883 640e ff c1 c0 bf");
        assert_eq!(second[0], (":status".to_string(), "307".to_string()));
        assert_eq!(second[3].1, "https://www.example.com");
        let third = decoded(
            &mut d,
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        assert_eq!(third[0], (":status".to_string(), "200".to_string()));
        assert_eq!(
            third[4],
            ("content-encoding".to_string(), "gzip".to_string())
        );
        assert_eq!(
            third[5].1,
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        );
    }

    #[test]
    fn a_bomb_is_decoded_but_not_kept() {
        let mut d = HeaderDecoder::default();
        // One 4,000-byte value indexed into the table, then named 2,000 times: 3 bytes of block
        // per 4 KB of header list.
        let mut block = vec![0x40, 0x01, b'x'];
        write_integer(&mut block, 4000, 7, 0);
        block.extend(std::iter::repeat_n(b'a', 4000));
        for _ in 0..2000 {
            block.push(0x80 | 62);
        }
        let list = d.decode(&block, 16 * 1024).unwrap();
        assert!(list.too_large);
        assert!(list.len() <= 4);
        assert!(list.size > 8_000_000);
    }

    #[test]
    fn malformed_blocks_are_compression_errors() {
        let mut d = HeaderDecoder::default();
        // Index 70 when the dynamic table is empty.
        let e = d.decode(&[0x80 | 70], 1 << 16).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CompressionError);
        // A table size update above what we allow.
        let mut block = Vec::new();
        write_integer(&mut block, 1 << 20, 5, 0x20);
        block.push(0x82);
        let e = HeaderDecoder::default()
            .decode(&block, 1 << 16)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::CompressionError);
    }

    #[test]
    fn encoded_blocks_decode_to_the_same_fields_after_a_table_size_change() {
        let mut e = HeaderEncoder::default();
        let mut d = HeaderDecoder::default();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":status", b"200"),
            (b"content-type", b"text/plain"),
            (b"x-backend", b"backend-1"),
        ];
        for round in 0..3 {
            if round == 1 {
                e.set_peer_table_size(0);
            }
            let mut block = Vec::new();
            e.encode(fields.iter().copied(), &mut block);
            let list = d.decode(&block, 1 << 16).unwrap();
            let got: Vec<_> = list.iter().collect();
            assert_eq!(got, fields, "round {round}");
        }
    }
}
