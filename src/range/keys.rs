//! What a client may write: the one copy of the key and value rules, checked by the
//! server on every write and by the client before it sends one.

use crate::range::descriptor::RESERVED_PREFIX;

/// Largest key a client may write.
pub const KEY_BYTES_MAX: usize = 8 << 10;
/// Largest value a client may write.
pub const VALUE_BYTES_MAX: usize = 4 << 20;

/// Why a key or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("the key is empty")]
    EmptyKey,
    #[error("keys starting with \"_/\" are reserved")]
    ReservedKey,
    #[error("key of {0} bytes exceeds the limit of {KEY_BYTES_MAX}")]
    KeyTooLarge(usize),
    #[error("value of {0} bytes exceeds the limit of {VALUE_BYTES_MAX}")]
    ValueTooLarge(usize),
}

/// Checks a key a client names (to write or to read).
///
/// # Errors
/// Empty, under the reserved prefix `_/`, or longer than `KEY_BYTES_MAX`.
pub fn validate_key(key: &[u8]) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(InvalidInput::ReservedKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(InvalidInput::KeyTooLarge(key.len()));
    }
    Ok(())
}

/// Checks a value a client writes.
///
/// # Errors
/// Longer than `VALUE_BYTES_MAX`.
pub fn validate_value(value: &[u8]) -> Result<(), InvalidInput> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(InvalidInput::ValueTooLarge(value.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_reserved_prefix_refused() {
        assert_eq!(validate_key(b""), Err(InvalidInput::EmptyKey));
        assert_eq!(validate_key(b"_/range/1"), Err(InvalidInput::ReservedKey));
        assert_eq!(validate_key(b"_"), Ok(()));
        assert_eq!(validate_key(&vec![b'k'; KEY_BYTES_MAX]), Ok(()));
        assert_eq!(
            validate_key(&vec![b'k'; KEY_BYTES_MAX + 1]),
            Err(InvalidInput::KeyTooLarge(KEY_BYTES_MAX + 1))
        );
        assert_eq!(validate_value(&vec![0; VALUE_BYTES_MAX]), Ok(()));
        assert!(validate_value(&vec![0; VALUE_BYTES_MAX + 1]).is_err());
    }
}
