//! Encryption of registry records at rest: the state key and XChaCha20-Poly1305.
//!
//! The cipher is RustCrypto's `chacha20poly1305` (audited, constant time), never our own.
//! XChaCha's 24-byte nonce is long enough to draw at random for every record with no
//! counter to keep across restarts: the chance of two records ever sharing a nonce under
//! one key is negligible (birthday bound at 2^96 records).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::array::Array;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, ExposeSecretMut as _, SecretBox};

/// Bytes of the random nonce stored in front of each sealed record.
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// The key records are encrypted with, read from `STATE_KEY_FILE`.
///
/// Its `Debug` shows nothing of the key.
pub struct StateKey(SecretBox<[u8; KEY_LEN]>);

impl StateKey {
    /// Parses the contents of `STATE_KEY_FILE`: 32 bytes written as standard base64
    /// (44 characters, as `openssl rand -base64 32` prints) or as 64 hex digits,
    /// surrounding whitespace ignored.
    ///
    /// The error says what was expected and never repeats the contents.
    pub fn parse(contents: &[u8]) -> Result<StateKey, String> {
        let text = contents.trim_ascii();
        let expected = "expected 32 random bytes written as base64 (44 characters, \
                        e.g. from `openssl rand -base64 32`) or as 64 hex digits";
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
            let out = key.expose_secret_mut();
            for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
                *byte = (hex_digit(pair[0]) << 4) | hex_digit(pair[1]);
            }
            return Ok(StateKey(key));
        }
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .map_err(|_| format!("{expected}; found {} characters", text.len()))?,
        );
        if decoded.len() != KEY_LEN {
            return Err(format!(
                "{expected}; found base64 of {} bytes, not {KEY_LEN}",
                decoded.len()
            ));
        }
        key.expose_secret_mut().copy_from_slice(&decoded);
        Ok(StateKey(key))
    }
}

fn hex_digit(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => unreachable!("checked with is_ascii_hexdigit"),
    }
}

impl Clone for StateKey {
    fn clone(&self) -> Self {
        StateKey(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey([REDACTED])")
    }
}

/// Why sealing or opening failed; carries nothing of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SealError {
    /// The operating system's random number generator failed.
    Random,
    /// Too short to be a sealed record, or the tag did not match: another key,
    /// another record's associated data, or damage.
    Open,
}

/// Seals and opens records with one [`StateKey`].
pub(super) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(super) fn new(key: &StateKey) -> Sealer {
        // The cipher keeps its own copy of the key and wipes it on drop (feature `zeroize`).
        let cipher = XChaCha20Poly1305::new(Array::cast_from_core(key.0.expose_secret()));
        Sealer { cipher }
    }

    /// Encrypts `plaintext` bound to `associated_data`: a fresh random nonce, then the
    /// ciphertext with its tag.
    pub(super) fn seal(
        &self,
        associated_data: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let nonce = XNonce::try_generate().map_err(|_| SealError::Random)?;
        let payload = Payload {
            msg: plaintext,
            aad: associated_data,
        };
        // Fails only for a plaintext longer than 256 GiB.
        let ciphertext = self
            .cipher
            .encrypt(&nonce, payload)
            .map_err(|_| SealError::Open)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts what [`Sealer::seal`] wrote, checking it was sealed with this key and the
    /// same `associated_data`.
    pub(super) fn open(
        &self,
        associated_data: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let Some((nonce, ciphertext)) = sealed.split_at_checked(NONCE_LEN) else {
            return Err(SealError::Open);
        };
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Open)?;
        let payload = Payload {
            msg: ciphertext,
            aad: associated_data,
        };
        self.cipher
            .decrypt(&nonce, payload)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    // The same 32 bytes as HEX.
    const BASE64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn bytes(key: &StateKey) -> [u8; KEY_LEN] {
        *key.0.expose_secret()
    }

    #[test]
    fn state_key_parses_base64_and_hex_with_surrounding_whitespace() {
        let from_base64 = StateKey::parse(format!("  {BASE64}\n").as_bytes()).unwrap();
        let from_hex = StateKey::parse(format!("\t{HEX}\r\n").as_bytes()).unwrap();
        let from_upper_hex = StateKey::parse(HEX.to_uppercase().as_bytes()).unwrap();
        let expected: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8);
        assert_eq!(bytes(&from_base64), expected);
        assert_eq!(bytes(&from_hex), expected);
        assert_eq!(bytes(&from_upper_hex), expected);
    }

    #[test]
    fn state_key_rejects_other_lengths_without_echoing_them() {
        let too_short = "c2VjcmV0LXNob3J0LWtleQ=="; // base64 of 16 bytes
        let too_long_hex = format!("{HEX}00");
        let not_base64 = "not a key: hunter2hunter2hunter2hunter2hunt";
        for input in [too_short, too_long_hex.as_str(), not_base64, "", "   "] {
            let error = StateKey::parse(input.as_bytes()).unwrap_err();
            assert!(error.contains("base64"), "{error}");
            assert!(error.contains("64 hex digits"), "{error}");
            let trimmed = input.trim();
            if !trimmed.is_empty() {
                assert!(!error.contains(trimmed), "{error}");
            }
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn state_key_debug_shows_nothing_of_the_key() {
        let key = StateKey::parse(HEX.as_bytes()).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "StateKey([REDACTED])");
        assert_eq!(format!("{:?}", key.clone()), debug);
    }

    #[test]
    fn sealed_opens_only_with_the_same_key_and_associated_data() {
        let sealer = Sealer::new(&StateKey::parse(HEX.as_bytes()).unwrap());
        let sealed = sealer.seal(b"ns/trigger", b"the secret").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + b"the secret".len() + 16);
        assert_eq!(
            sealer.open(b"ns/trigger", &sealed).unwrap().as_slice(),
            b"the secret"
        );
        assert_eq!(sealer.open(b"ns/other", &sealed), Err(SealError::Open));
        let other = Sealer::new(&StateKey::parse([b'f'; 64].as_slice()).unwrap());
        assert_eq!(other.open(b"ns/trigger", &sealed), Err(SealError::Open));
        assert_eq!(
            sealer.open(b"ns/trigger", &sealed[..10]),
            Err(SealError::Open)
        );
        // A fresh nonce each time: the same record never seals to the same bytes.
        assert_ne!(sealer.seal(b"ns/trigger", b"the secret").unwrap(), sealed);
    }
}
