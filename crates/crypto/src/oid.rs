//! Object identifiers used by Fapiao's certificates and envelopes, with their sources.

use const_oid::ObjectIdentifier as Oid;

/// SM2 elliptic curve (GM/T 0006: `1.2.156.10197.1.301`).
pub const SM2_CURVE: Oid = Oid::new_unwrap("1.2.156.10197.1.301");
/// SM2 public-key encryption (GM/T 0006: `1.2.156.10197.1.301.3`).
pub const SM2_ENCRYPTION: Oid = Oid::new_unwrap("1.2.156.10197.1.301.3");
/// SM2 signature with SM3 (GM/T 0006: `1.2.156.10197.1.501`).
pub const SM2_WITH_SM3: Oid = Oid::new_unwrap("1.2.156.10197.1.501");
/// SM3 digest (GM/T 0006: `1.2.156.10197.1.401`).
pub const SM3: Oid = Oid::new_unwrap("1.2.156.10197.1.401");
/// SM4 in CBC mode (GM/T 0006: `1.2.156.10197.1.104.2`).
pub const SM4_CBC: Oid = Oid::new_unwrap("1.2.156.10197.1.104.2");
/// SM4 in GCM mode (GM/T 0006: `1.2.156.10197.1.104.8`; OpenSSL's `SM4-GCM`).
pub const SM4_GCM: Oid = Oid::new_unwrap("1.2.156.10197.1.104.8");
/// GM/T 0010 `data` content type.
pub const GM_DATA: Oid = Oid::new_unwrap("1.2.156.10197.6.1.4.2.1");
/// GM/T 0010 `signedData` content type.
pub const GM_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.156.10197.6.1.4.2.2");
/// GM/T 0010 `envelopedData` content type.
pub const GM_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.156.10197.6.1.4.2.3");

/// NIST P-256 (`prime256v1`, RFC 5480).
pub const P256_CURVE: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// `id-ecPublicKey` (RFC 5480).
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// `ecdsa-with-SHA256` (RFC 5758).
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// SHA-256 (RFC 5754).
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `id-data` (RFC 5652).
pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData` (RFC 5652).
pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// `id-envelopedData` (RFC 5652).
pub const ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
/// `dhSinglePass-stdDH-sha256kdf-scheme` (RFC 5753).
pub const ECDH_SHA256_KDF: Oid = Oid::new_unwrap("1.3.132.1.11.1");
/// `dhSinglePass-stdDH-sha1kdf-scheme` (RFC 5753), OpenSSL 3.0's default; accepted on opening.
pub const ECDH_SHA1_KDF: Oid = Oid::new_unwrap("1.3.133.16.840.63.0.2");
/// `id-aes128-wrap` (RFC 3394).
pub const AES128_WRAP: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.5");
/// `id-aes256-wrap` (RFC 3394).
pub const AES256_WRAP: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.45");
/// `id-ct-authEnvelopedData` (RFC 5083): the envelopes of both suites.
pub const AUTH_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.23");
/// `id-aes256-GCM` (RFC 5084).
pub const AES256_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.46");
/// `id-aes128-CBC` (RFC 3565).
pub const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
/// `id-aes256-CBC` (RFC 3565).
pub const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
/// `id-contentType` attribute (RFC 5652).
pub const ATTR_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// `id-messageDigest` attribute (RFC 5652).
pub const ATTR_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// `id-signingTime` attribute (RFC 5652).
pub const ATTR_SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
/// `organizationIdentifier` (X.520 2.5.4.97): carries the taxpayer id in subjects.
pub const ORGANIZATION_IDENTIFIER: Oid = Oid::new_unwrap("2.5.4.97");
