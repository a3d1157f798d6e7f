//! Key-pair authentication: the JWT Snowflake accepts instead of a password.
//!
//! The token is RS256-signed with the user's RSA private key (PKCS#8 PEM, optionally
//! encrypted). Its claims, as the official connectors build them:
//! - `iss` = `ACCOUNT.USER.SHA256:<base64 of the SHA-256 of the public key's DER
//!   SubjectPublicKeyInfo>` (the fingerprint `DESC USER` shows as `RSA_PUBLIC_KEY_FP`);
//! - `sub` = `ACCOUNT.USER`;
//! - `iat` now, `exp` one hour later (Snowflake's maximum).
//!
//! `ACCOUNT` is the account identifier upper-cased, cut at the first `.` (a locator's region
//! suffix such as `xy12345.us-east-1` is not part of it); `USER` is upper-cased.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pkcs8::der::Encode;
use pkcs8::der::asn1::BitStringRef;
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, SecretDocument};
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::{Error, Result};
use crate::session::Secret;

/// How long a token is valid; Snowflake refuses tokens valid for more than an hour.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// `rsaEncryption` (RFC 8017), the algorithm of an RSA SubjectPublicKeyInfo.
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A loaded private key and its public key's fingerprint.
pub(crate) struct KeyPairSigner {
    key: RsaKeyPair,
    /// `SHA256:<base64>` of the public key's DER SubjectPublicKeyInfo.
    fingerprint: String,
}

impl std::fmt::Debug for KeyPairSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairSigner")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl KeyPairSigner {
    /// Reads a PKCS#8 PEM file (`BEGIN PRIVATE KEY`, or `BEGIN ENCRYPTED PRIVATE KEY` with a
    /// passphrase).
    pub fn from_pem_file(path: &Path, passphrase: Option<&Secret>) -> Result<KeyPairSigner> {
        let config_error = |message: String| Error::Config {
            field: "private_key_path".into(),
            message: format!("{}: {message}", path.display()),
        };
        let pem = std::fs::read_to_string(path).map_err(|e| config_error(format!("cannot read: {e}")))?;
        KeyPairSigner::from_pem(&pem, passphrase).map_err(|e| match e {
            Error::Config { message, .. } => config_error(message),
            other => other,
        })
    }

    /// Parses a PKCS#8 PEM key.
    pub fn from_pem(pem: &str, passphrase: Option<&Secret>) -> Result<KeyPairSigner> {
        let config_error = |message: String| Error::Config {
            field: "private_key_path".into(),
            message,
        };
        let der: SecretDocument = if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            let passphrase = passphrase
                .ok_or_else(|| config_error("the private key is encrypted and no passphrase is configured".into()))?;
            let (_, document) = SecretDocument::from_pem(pem)
                .map_err(|e| config_error(format!("not a PEM encrypted private key: {e}")))?;
            let encrypted = EncryptedPrivateKeyInfo::try_from(document.as_bytes())
                .map_err(|e| config_error(format!("not a PKCS#8 encrypted private key: {e}")))?;
            encrypted
                .decrypt(passphrase.expose())
                .map_err(|e| config_error(format!("cannot decrypt the private key (wrong passphrase?): {e}")))?
        } else if pem.contains("BEGIN RSA PRIVATE KEY") {
            return Err(config_error(
                "a PKCS#1 key (BEGIN RSA PRIVATE KEY): convert it to PKCS#8 with `openssl pkcs8 -topk8`".into(),
            ));
        } else {
            let (label, document) =
                SecretDocument::from_pem(pem).map_err(|e| config_error(format!("not a PEM private key: {e}")))?;
            if label != "PRIVATE KEY" {
                return Err(config_error(format!("expected a PKCS#8 PRIVATE KEY, found {label}")));
            }
            PrivateKeyInfo::try_from(document.as_bytes())
                .map_err(|e| config_error(format!("not a PKCS#8 private key: {e}")))?;
            document
        };
        let key = RsaKeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| config_error(format!("not a usable RSA private key: {e}")))?;
        let fingerprint = public_key_fingerprint(key.public_key().as_ref())?;
        Ok(KeyPairSigner { key, fingerprint })
    }

    /// `SHA256:<base64>` of the public key.
    #[cfg(test)]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A signed token for `account`/`user`, issued at `now`.
    pub fn token(&self, account: &str, user: &str, now: SystemTime) -> Result<String> {
        let account = jwt_account(account);
        let user = user.to_uppercase();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": format!("{account}.{user}.{}", self.fingerprint),
            "sub": format!("{account}.{user}"),
            "iat": iat,
            "exp": iat + TOKEN_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::Config {
                field: "private_key_path".into(),
                message: "signing the login token failed".into(),
            })?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The account part of the JWT claims: upper-cased, without a region suffix.
pub(crate) fn jwt_account(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

/// `SHA256:<base64>` of the DER SubjectPublicKeyInfo wrapping a PKCS#1 RSA public key.
fn public_key_fingerprint(pkcs1_public_key: &[u8]) -> Result<String> {
    let protocol = |e: pkcs8::der::Error| Error::Protocol(format!("encoding the public key: {e}"));
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(pkcs8::der::asn1::AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(pkcs1_public_key).map_err(protocol)?,
    };
    let der = spki.to_der().map_err(protocol)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(format!("SHA256:{}", STANDARD.encode(digest.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// The fixtures were made with OpenSSL 3.0 (`openssl genpkey -algorithm RSA`, then
    /// `openssl pkcs8 -topk8 -v2 des3|aes256`, as Snowflake's key-pair guide shows), and
    /// `rsa_key.fingerprint` with `openssl pkey -pubout -outform DER | openssl dgst -sha256
    /// -binary | base64`: an independent computation of `RSA_PUBLIC_KEY_FP`.
    #[test]
    fn tokens_verify_with_the_public_key_and_carry_snowflakes_claims() {
        let expected = format!(
            "SHA256:{}",
            std::fs::read_to_string(fixture("rsa_key.fingerprint")).unwrap().trim()
        );
        let passphrase = Secret::new("test-passphrase");
        for (file, passphrase) in [
            ("rsa_key.p8", None),
            ("rsa_key_des3.p8", Some(&passphrase)),
            ("rsa_key_aes256.p8", Some(&passphrase)),
        ] {
            let signer = KeyPairSigner::from_pem_file(&fixture(file), passphrase).unwrap();
            assert_eq!(signer.fingerprint(), expected, "{file}");
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let token = signer.token("xy12345.us-east-1", "loader_user", now).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
            let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(
                claims,
                serde_json::json!({
                    "iss": format!("XY12345.LOADER_USER.{expected}"),
                    "sub": "XY12345.LOADER_USER",
                    "iat": 1_700_000_000u64,
                    "exp": 1_700_003_600u64,
                })
            );
            // Verify with the public key alone (from the key pair's PKCS#1 public key).
            let public = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signer.key.public_key().as_ref().to_vec(),
            );
            let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            public
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .expect("signature verifies");
            let mut tampered = format!("{}.{}", parts[0], parts[1]).into_bytes();
            tampered[10] ^= 1;
            assert!(public.verify(&tampered, &signature).is_err());
        }
    }

    #[test]
    fn unusable_keys_are_config_errors_naming_the_file() {
        let missing = KeyPairSigner::from_pem_file(&fixture("rsa_key_aes256.p8"), None).unwrap_err();
        assert!(missing.to_string().contains("no passphrase"), "{missing}");
        assert!(missing.to_string().contains("rsa_key_aes256.p8"), "{missing}");
        let wrong =
            KeyPairSigner::from_pem_file(&fixture("rsa_key_aes256.p8"), Some(&Secret::new("nope"))).unwrap_err();
        assert!(wrong.to_string().contains("wrong passphrase"), "{wrong}");
        assert!(!wrong.to_string().contains("nope"));
        let not_a_key = KeyPairSigner::from_pem("hello", None).unwrap_err();
        assert!(matches!(not_a_key, Error::Config { .. }));
    }

    #[test]
    fn the_account_loses_its_region_and_is_upper_cased() {
        assert_eq!(jwt_account("xy12345.us-east-1"), "XY12345");
        assert_eq!(jwt_account("myorg-myaccount"), "MYORG-MYACCOUNT");
        assert_eq!(jwt_account("acct.us-east-2.aws"), "ACCT");
    }
}
