//! Envelopes against independent implementations: OpenSSL CMS for INTL, both ways; for GM,
//! each layer against `openssl pkeyutl`, Python gmssl (SM2) and Python cryptography (SM4-GCM),
//! both ways.

use fapiao_crypto::aead::{AeadAlgorithm, AeadKey};
use fapiao_crypto::envelope::{MemoryReplayGuard, Message, OpenError, Opener, hazmat, seal};
use fapiao_crypto::primitives;
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{PublicKey, Role, SM2_DISTID, Suite};

use crate::helpers::{
    NOW, Pki, hex, key_pem, message, openssl, party_files, public_pem, run, write,
};

#[test]
fn openssl_cms_decrypts_and_verifies_our_intl_envelope() {
    let pki = Pki::new(Suite::Intl);
    let cloud = party_files(&pki, Role::Cloud, "cloud-1");
    let platform = party_files(&pki, Role::Platform, "platform-1");
    let msg = message(&cloud.party, &platform.party, "m-1");
    let env = seal(
        &cloud.party,
        &platform.encryption_cert,
        &msg,
        &mut system_rng(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env_path = write(d, "env.der", &env);
    let recip = write(d, "recip.pem", platform.encryption_cert.to_pem().unwrap());
    let recip_key = write(d, "recip.key", key_pem(&platform.encryption_key));
    let inner = d.join("inner.der").to_str().unwrap().to_owned();
    let (ok, out) = openssl(&[
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", &env_path, "-recip", &recip,
        "-inkey", &recip_key, "-out", &inner,
    ]);
    assert!(ok, "decrypt: {out}");
    let root = write(d, "root.pem", pki.ca.certificate().to_pem().unwrap());
    let content = d.join("content.der").to_str().unwrap().to_owned();
    // At the tests' fixed time, which the certificates are made for (not the wall clock).
    let at = NOW.unix_timestamp().to_string();
    let (ok, out) = openssl(&[
        "cms", "-verify", "-binary", "-inform", "DER", "-in", &inner, "-CAfile", &root, "-purpose",
        "any", "-attime", &at, "-out", &content,
    ]);
    assert!(
        ok && out.contains("Verification successful"),
        "verify: {out}"
    );
    assert_eq!(std::fs::read(&content).unwrap(), msg.to_der().unwrap());
}

/// A message signed by `openssl cms -sign` and encrypted by `openssl cms -encrypt <cipher>`
/// to the platform; what we make of it.
fn open_openssl_envelope(cipher: &str) -> (Message, Result<Message, OpenError>) {
    let pki = Pki::new(Suite::Intl);
    let cloud = party_files(&pki, Role::Cloud, "cloud-1");
    let platform = party_files(&pki, Role::Platform, "platform-1");
    let msg = message(&cloud.party, &platform.party, &format!("openssl{cipher}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg_path = write(d, "msg.der", msg.to_der().unwrap());
    let signer = write(d, "signer.pem", cloud.signing_cert.to_pem().unwrap());
    let signer_key = write(d, "signer.key", key_pem(&cloud.signing_key));
    let signed = d.join("signed.der").to_str().unwrap().to_owned();
    let (ok, out) = openssl(&[
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-md",
        "sha256",
        "-in",
        &msg_path,
        "-signer",
        &signer,
        "-inkey",
        &signer_key,
        "-outform",
        "DER",
        "-out",
        &signed,
    ]);
    assert!(ok, "sign: {out}");
    let recip = write(d, "recip.pem", platform.encryption_cert.to_pem().unwrap());
    let env_path = d.join("env.der").to_str().unwrap().to_owned();
    let (ok, out) = openssl(&[
        "cms", "-encrypt", "-binary", cipher, "-in", &signed, "-outform", "DER", "-out", &env_path,
        &recip,
    ]);
    assert!(ok, "encrypt: {out}");
    let env = std::fs::read(&env_path).unwrap();
    let trust = pki.trust();
    let guard = MemoryReplayGuard::new();
    let opened = Opener::new(&platform.party, &trust, &guard)
        .open(&env, NOW)
        .map(|o| o.message);
    (msg, opened)
}

#[test]
fn we_open_what_openssl_cms_signs_and_encrypts_with_aes_256_gcm() {
    let (msg, opened) = open_openssl_envelope("-aes-256-gcm");
    assert_eq!(opened.unwrap(), msg);
}

#[test]
fn unauthenticated_and_weaker_openssl_envelopes_are_refused_as_malformed() {
    // CBC content (EnvelopedData, no tag: the padding-oracle shape) and a 128-bit GCM key are
    // refused before any key is touched, whatever a sender's library defaults to.
    for cipher in ["-aes256", "-aes128", "-aes-128-gcm"] {
        let (_, opened) = open_openssl_envelope(cipher);
        assert_eq!(opened, Err(OpenError::Malformed), "{cipher}");
    }
}

/// SM4-GCM decryption by Python `cryptography` (OpenSSL's SM4 and GCM): the plaintext, or
/// `None` when the tag does not verify.
fn py_sm4_gcm_open(key: &[u8], nonce: &[u8], ciphertext: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    let script = "import sys\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\nk, n, c, t = (bytes.fromhex(a) for a in sys.argv[1:5])\nd = Cipher(algorithms.SM4(k), modes.GCM(n, t)).decryptor()\nsys.stdout.write((d.update(c) + d.finalize()).hex())\n";
    let (ok, out) = run(
        "python3",
        &[
            "-c",
            script,
            &hex(key),
            &hex(nonce),
            &hex(ciphertext),
            &hex(tag),
        ],
    );
    ok.then(|| fapiao_crypto::hex::decode(out.trim()).unwrap().to_vec())
}

fn gmssl_verify(public: &PublicKey, message: &[u8], signature_der: &[u8]) -> bool {
    let spki = public.to_spki_der().unwrap();
    let script = "import sys\nfrom gmssl import sm2\npub = bytes.fromhex(sys.argv[1])[-64:].hex()\nv = sm2.CryptSM2(private_key='', public_key='', asn1=True)\nv.public_key = pub\nsys.exit(0 if v.verify_with_sm3(sys.argv[3], bytes.fromhex(sys.argv[2])) else 1)\n";
    run(
        "python3",
        &[
            "-c",
            script,
            &hex(&spki),
            &hex(message),
            &hex(signature_der),
        ],
    )
    .0
}

#[test]
fn each_gm_layer_checks_out_with_openssl_and_gmssl() {
    let pki = Pki::new(Suite::Gm);
    let cloud = party_files(&pki, Role::Cloud, "cloud-1");
    let platform = party_files(&pki, Role::Platform, "platform-1");
    let msg = message(&cloud.party, &platform.party, "gm-1");
    let env = seal(
        &cloud.party,
        &platform.encryption_cert,
        &msg,
        &mut system_rng(),
    )
    .unwrap();
    let layers = hazmat::enveloped(&env).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The SM4 key, SM2-encrypted to the platform: OpenSSL decrypts it.
    let wrapped = write(d, "wrapped.der", &layers.wrapped_key);
    let key = write(d, "enc.key", key_pem(&platform.encryption_key));
    let cek_path = d.join("cek.bin").to_str().unwrap().to_owned();
    let (ok, out) = openssl(&[
        "pkeyutl", "-decrypt", "-inkey", &key, "-in", &wrapped, "-out", &cek_path,
    ]);
    assert!(ok, "{out}");
    let cek = std::fs::read(&cek_path).unwrap();
    assert_eq!(cek.len(), 16);

    // The content, SM4-GCM: Python cryptography decrypts it to the same signed layer we do,
    // and refuses it with one tag bit changed.
    assert_eq!(layers.nonce.len(), 12);
    assert_eq!(layers.tag.len(), 16);
    let inner = py_sm4_gcm_open(&cek, &layers.nonce, &layers.ciphertext, &layers.tag)
        .expect("cryptography opens our SM4-GCM content");
    assert_eq!(
        inner,
        hazmat::decrypt(&platform.party, &env).unwrap().to_vec()
    );
    let mut bad_tag = layers.tag.clone();
    bad_tag[0] ^= 1;
    assert_eq!(
        py_sm4_gcm_open(&cek, &layers.nonce, &layers.ciphertext, &bad_tag),
        None
    );

    // The SM2 signature over the signed attributes: OpenSSL and gmssl verify it.
    let signed = hazmat::signed(&inner).unwrap();
    assert_eq!(Message::from_der(&signed.content).unwrap(), msg);
    let attrs = write(d, "attrs.der", &signed.signed_attributes);
    let sig = write(d, "sig.der", &signed.signature);
    let pubkey = write(d, "signer.pub", public_pem(&cloud.signing_key));
    let distid = format!("distid:{SM2_DISTID}");
    let (ok, out) = openssl(&[
        "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", &pubkey, "-pkeyopt",
        &distid, "-in", &attrs, "-sigfile", &sig,
    ]);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    assert!(gmssl_verify(
        &cloud.signing_key.public_key(),
        &signed.signed_attributes,
        &signed.signature
    ));
    // A changed byte fails in gmssl too: the oracle can say no.
    let mut tampered = signed.signed_attributes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(!gmssl_verify(
        &cloud.signing_key.public_key(),
        &tampered,
        &signed.signature
    ));
}

#[test]
fn we_accept_each_gm_layer_made_by_openssl_and_gmssl() {
    let pki = Pki::new(Suite::Gm);
    let party = party_files(&pki, Role::Platform, "platform-1");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = "开票请求 order YF-2026-000101".as_bytes();
    let data_path = write(d, "data.bin", data);

    // SM2 signature by OpenSSL.
    let key = write(d, "sign.key", key_pem(&party.signing_key));
    let sig_path = d.join("sig.der").to_str().unwrap().to_owned();
    let distid = format!("distid:{SM2_DISTID}");
    let (ok, out) = openssl(&[
        "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", &key, "-pkeyopt", &distid, "-in",
        &data_path, "-out", &sig_path,
    ]);
    assert!(ok, "{out}");
    party
        .signing_key
        .public_key()
        .verify(data, &std::fs::read(&sig_path).unwrap())
        .unwrap();

    // SM2 signature by gmssl.
    let secret = party.signing_key.to_pkcs8_der().unwrap();
    let d_hex = sec1_scalar_hex(&secret);
    let spki = party.signing_key.public_key().to_spki_der().unwrap();
    let script = "import sys\nfrom gmssl import sm2, func\nk = sm2.CryptSM2(private_key=sys.argv[1], public_key='', asn1=True)\nk.public_key = bytes.fromhex(sys.argv[2])[-64:].hex()\nprint(k.sign_with_sm3(bytes.fromhex(sys.argv[3]), func.random_hex(64)))\n";
    let (ok, out) = run("python3", &["-c", script, &d_hex, &hex(&spki), &hex(data)]);
    assert!(ok, "{out}");
    let sig = (0..out.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&out.trim()[i..i + 2], 16).unwrap())
        .collect::<Vec<_>>();
    party.signing_key.public_key().verify(data, &sig).unwrap();

    // SM2 encryption by OpenSSL (GM/T 0009 DER), decrypted by us.
    let pubkey = write(d, "enc.pub", public_pem(&party.encryption_key));
    let ct_path = d.join("ct.der").to_str().unwrap().to_owned();
    let (ok, out) = openssl(&[
        "pkeyutl", "-encrypt", "-pubin", "-inkey", &pubkey, "-in", &data_path, "-out", &ct_path,
    ]);
    assert!(ok, "{out}");
    let plain =
        primitives::sm2_decrypt(&party.encryption_key, &std::fs::read(&ct_path).unwrap()).unwrap();
    assert_eq!(plain.as_slice(), data);

    // SM4-GCM by Python cryptography, opened by us (with the tag it computed).
    let (k, nonce) = ([0x11_u8; 16], [0x22_u8; 12]);
    let script = "import sys\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\nk, n, p = (bytes.fromhex(a) for a in sys.argv[1:4])\ne = Cipher(algorithms.SM4(k), modes.GCM(n)).encryptor()\nc = e.update(p) + e.finalize()\nsys.stdout.write((c + e.tag).hex())\n";
    let (ok, out) = run(
        "python3",
        &["-c", script, &hex(&k), &hex(&nonce), &hex(data)],
    );
    assert!(ok, "{out}");
    let sealed = fapiao_crypto::hex::decode(out.trim()).unwrap().to_vec();
    let key = AeadKey::new(AeadAlgorithm::Sm4Gcm, &k).unwrap();
    assert_eq!(key.open(&nonce, &[], &sealed).unwrap().as_slice(), data);
    assert_eq!(key.seal(&nonce, &[], data), sealed);
}

/// The private scalar (hex) from PKCS#8 DER: the last 32 bytes of the inner ECPrivateKey's
/// privateKey OCTET STRING, found as `04 20 <32 bytes>`.
fn sec1_scalar_hex(pkcs8: &[u8]) -> String {
    let at = pkcs8.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    hex(&pkcs8[at + 2..at + 34])
}
