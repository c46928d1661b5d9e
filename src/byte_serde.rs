//! Serde for byte strings as one run of bytes, for `#[serde(with = "...")]`.
//!
//! Serde's derive writes a `Vec<u8>` as a sequence of `u8`, one call per byte, and
//! reads it back one byte at a time; under load that was the largest cost of the
//! put path (callgrind: serializing `Entry` and deserializing `Vec<u8>` took about a
//! third of a node's instructions). `serialize_bytes`/`deserialize_byte_buf` move the
//! whole run at once. In bincode both forms are the same bytes (a varint length,
//! then the raw bytes), so the WAL, snapshot and wire formats do not change: the
//! tests below hold that.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Serializer;

/// `Vec<u8>` as bytes.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Asks for borrowed bytes: from a slice bincode hands them over without the
    /// zero-filled buffer its owned `Vec<u8>` decode allocates first; from a reader
    /// it hands over an owned buffer.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// `bytes::Bytes` (a shared, reference-counted buffer) as bytes: the same encoding as
/// `vec`, so a field can switch between the two without a format change.
pub mod shared {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &bytes::Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<bytes::Bytes, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor).map(bytes::Bytes::from)
    }
}

/// `Option<bytes::Bytes>` as an option of bytes: the same encoding as `option`.
pub mod option_shared {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &Option<bytes::Bytes>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::option::serialize_slice(bytes.as_deref(), serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<bytes::Bytes>, D::Error> {
        super::option::deserialize(deserializer).map(|bytes| bytes.map(bytes::Bytes::from))
    }
}

/// `Option<Vec<u8>>` as an option of bytes.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serialize_slice(bytes.as_deref(), serializer)
    }

    pub(super) fn serialize_slice<S: Serializer>(
        bytes: Option<&[u8]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_some(&AsBytes(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct AsBytes<'a>(&'a [u8]);

    impl serde::Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an optional byte string")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::vec::deserialize(d).map(Some)
        }
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    /// Self-describing formats may hand a byte string over as a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Derived {
        a: Vec<u8>,
        b: Option<Vec<u8>>,
        c: Option<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Shared {
        #[serde(with = "super::shared")]
        a: bytes::Bytes,
        #[serde(with = "super::option")]
        b: Option<Vec<u8>>,
        #[serde(with = "super::option")]
        c: Option<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes {
        #[serde(with = "super::vec")]
        a: Vec<u8>,
        #[serde(with = "super::option")]
        b: Option<Vec<u8>>,
        #[serde(with = "super::option")]
        c: Option<Vec<u8>>,
    }

    #[test]
    fn same_bincode_bytes_as_the_derive() {
        let config = bincode::config::standard();
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let derived = Derived { a: a.clone(), b: Some(a[..len / 2].to_vec()), c: None };
            let bytes = AsBytes { a: a.clone(), b: Some(a[..len / 2].to_vec()), c: None };
            let old = bincode::serde::encode_to_vec(&derived, config).unwrap();
            let new = bincode::serde::encode_to_vec(&bytes, config).unwrap();
            assert_eq!(old, new, "len {len}");
            let (back, _): (AsBytes, usize) =
                bincode::serde::decode_from_slice(&old, config).unwrap();
            assert_eq!(back, bytes);
            let back: AsBytes =
                bincode::serde::decode_from_std_read(&mut &old[..], config).unwrap();
            assert_eq!(back, bytes);
            let shared = Shared { a: a.clone().into(), b: bytes.b.clone(), c: None };
            assert_eq!(bincode::serde::encode_to_vec(&shared, config).unwrap(), old, "len {len}");
            let (back, _): (Shared, usize) =
                bincode::serde::decode_from_slice(&old, config).unwrap();
            assert_eq!(back, shared);
        }
    }
}
