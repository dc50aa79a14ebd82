//! A browser's side of a Web Push subscription: its key pair and auth
//! secret, and the decryption of what a push service hands it (RFC 8291 §3
//! over RFC 8188 §2). Written from the RFCs rather than taken from the
//! crate that encrypts, so that a test checks the protocol, not the crate
//! against itself.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use sha2::Sha256;

/// A subscriber: `p256dh` and `auth` are what the browser sends with its
/// subscription (base64url, no padding).
pub struct PushSubscriber {
    secret: p256::SecretKey,
    auth: [u8; 16],
    pub p256dh: String,
    pub auth_base64: String,
}

impl Default for PushSubscriber {
    fn default() -> Self {
        Self::new()
    }
}

impl PushSubscriber {
    /// A fresh key pair and auth secret.
    pub fn new() -> Self {
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the OS gives random bytes");
            if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
                break key;
            }
        };
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("the OS gives random bytes");
        Self::with(secret, auth)
    }

    /// Given keys (an RFC's example): the private key's 32 bytes and the
    /// 16-byte auth secret.
    pub fn from_parts(secret: &[u8], auth: &[u8]) -> Result<Self, String> {
        let secret = p256::SecretKey::from_slice(secret).map_err(|e| e.to_string())?;
        let auth = auth
            .try_into()
            .map_err(|_| format!("auth secret of {} bytes, not 16", auth.len()))?;
        Ok(Self::with(secret, auth))
    }

    fn with(secret: p256::SecretKey, auth: [u8; 16]) -> Self {
        let p256dh = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Self {
            secret,
            auth,
            p256dh,
            auth_base64: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// The plaintext of an `aes128gcm` message, or what is wrong with it.
    pub fn decrypt(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        // Header: salt (16) | record size (4) | key id length (1) | key id.
        if message.len() < 21 {
            return Err(format!("{} bytes: shorter than the header", message.len()));
        }
        let salt = &message[..16];
        let record_size =
            u32::from_be_bytes([message[16], message[17], message[18], message[19]]) as usize;
        if record_size < 18 {
            return Err(format!("record size {record_size}"));
        }
        let id_len = message[20] as usize;
        if id_len != 65 || message.len() < 21 + id_len {
            return Err(format!(
                "key id of {id_len} bytes: not the sender's uncompressed public key"
            ));
        }
        let as_public_bytes = &message[21..21 + id_len];
        let as_public = p256::PublicKey::from_sec1_bytes(as_public_bytes)
            .map_err(|e| format!("sender's key: {e}"))?;

        // RFC 8291 §3.3-3.4: IKM from the ECDH secret, keyed by auth.
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), as_public.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(self.secret.public_key().to_encoded_point(false).as_bytes());
        key_info.extend_from_slice(as_public_bytes);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes().as_slice())
            .expand(&key_info, &mut ikm)
            .map_err(|e| e.to_string())?;

        // RFC 8188 §2.2-2.3: content key and nonce from the salt.
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut cek = [0u8; 16];
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .map_err(|e| e.to_string())?;
        let mut base_nonce = [0u8; 12];
        prk.expand(b"Content-Encoding: nonce\0", &mut base_nonce)
            .map_err(|e| e.to_string())?;
        let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|e| e.to_string())?;

        let records: Vec<&[u8]> = message[21 + id_len..].chunks(record_size).collect();
        let mut plaintext = Vec::new();
        for (seq, record) in records.iter().enumerate() {
            let mut nonce = base_nonce;
            for (n, s) in nonce.iter_mut().zip(&(seq as u128).to_be_bytes()[4..]) {
                *n ^= s;
            }
            let mut padded = cipher
                .decrypt(Nonce::from_slice(&nonce), *record)
                .map_err(|_| format!("record {seq} does not decrypt"))?;
            while padded.last() == Some(&0) {
                padded.pop();
            }
            let delimiter = if seq + 1 == records.len() { 2 } else { 1 };
            if padded.pop() != Some(delimiter) {
                return Err(format!(
                    "record {seq}: padding delimiter is not {delimiter}"
                ));
            }
            plaintext.extend(padded);
        }
        Ok(plaintext)
    }
}

/// A fresh VAPID private key as the notifications settings take it (the
/// raw P-256 scalar, base64url): the application server's side.
pub fn vapid_private_key() -> String {
    let key = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS gives random bytes");
        if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
            break key;
        }
    };
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}
