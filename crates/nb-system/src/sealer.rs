//! Secrets sealed at rest with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): a random
//! 24-byte nonce per secret, stored before the ciphertext and its tag. A database leak alone
//! gives no secret: the key is the deployment's (`NB_ENCRYPTION_KEY`), never stored beside.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use nb_domain::ports::{SecretSealer, UnsealError};
use nb_domain::system::RandomnessUnavailable;

const NONCE_BYTES: usize = 24;
/// A sealed secret starts with this version byte.
const VERSION: u8 = 1;

/// Seals with one 256-bit key.
pub struct XChaChaSealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for XChaChaSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XChaChaSealer(…)")
    }
}

impl XChaChaSealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }
}

impl SecretSealer for XChaChaSealer {
    fn seal(&self, secret: &[u8]) -> Result<Vec<u8>, RandomnessUnavailable> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| RandomnessUnavailable)?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), secret)
            .map_err(|_| RandomnessUnavailable)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, UnsealError> {
        let (&version, rest) = sealed.split_first().ok_or(UnsealError)?;
        if version != VERSION || rest.len() < NONCE_BYTES {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| UnsealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_a_wrong_key_or_a_changed_byte_cannot_open() {
        let sealer = XChaChaSealer::new(&[7; 32]);
        let secret = b"a webhook secret of 32 bytes....";
        let sealed = sealer.seal(secret).unwrap();
        assert!(!sealed.windows(secret.len()).any(|window| window == secret));
        assert_ne!(
            sealed,
            sealer.seal(secret).unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), secret);
        assert_eq!(XChaChaSealer::new(&[8; 32]).open(&sealed), Err(UnsealError));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&tampered), Err(UnsealError));
        assert_eq!(sealer.open(&[]), Err(UnsealError));
    }
}
