//! Published vectors (see tests/data/README.md for sources).

use fapiao_crypto::primitives;

fn unhex(s: &str) -> Vec<u8> {
    fapiao_crypto::hex::decode(s).unwrap().to_vec()
}

#[test]
fn sm3_gb_t_32905_examples() {
    assert_eq!(
        primitives::sm3(b"abc").to_vec(),
        unhex("66c7f0f4 62eeedd9 d1f2d46b dc10e4e2 4167c487 5cf2f7a2 297da02b 8f4ba8e0")
    );
    assert_eq!(
        primitives::sm3(&b"abcd".repeat(16)).to_vec(),
        unhex("debe9ff9 2275b8a1 38604889 c18e5a4d 6fdb70e5 387e5765 293dcba3 9c0c5732")
    );
}

#[test]
fn sm4_gb_t_32907_examples() {
    let key: [u8; 16] = unhex("0123456789abcdeffedcba9876543210")
        .try_into()
        .unwrap();
    // The block cipher itself, as SM4-GCM builds on it.
    let cipher = <sm4::Sm4 as sm4::cipher::KeyInit>::new(&key.into());
    let ecb = |block: &[u8; 16]| -> [u8; 16] {
        let mut b = (*block).into();
        sm4::cipher::BlockCipherEncrypt::encrypt_block(&cipher, &mut b);
        b.into()
    };
    let mut block = key;
    block = ecb(&block);
    assert_eq!(block.to_vec(), unhex("681edf34d206965e86b3e94f536e4246"));
    for _ in 1..1_000_000 {
        block = ecb(&block);
    }
    assert_eq!(block.to_vec(), unhex("595298c7c6fd271f0402f804c33d3f66"));
}

const D_A: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";

fn example_key() -> fapiao_crypto::PrivateKey {
    use sm2::pkcs8::EncodePrivateKey;
    let secret = sm2::SecretKey::from_slice(&unhex(D_A)).unwrap();
    fapiao_crypto::PrivateKey::from_pkcs8_der(secret.to_pkcs8_der().unwrap().as_bytes()).unwrap()
}

#[test]
fn sm2_signature_example_of_gb_t_32918_5_annex_a() {
    let key = example_key().public_key();
    // The annex's public key.
    let spki = key.to_spki_der().unwrap();
    assert!(spki.ends_with(&unhex(
        "04 09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
            CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
    )));
    let r = unhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3");
    let s = unhex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA");
    let der = sm2::dsa::Signature::from_slice(&[r.as_slice(), &s].concat())
        .unwrap()
        .to_der();
    // Our verification, with the standard distinguishing ID 1234567812345678.
    key.verify(b"message digest", der.as_bytes()).unwrap();
    assert!(key.verify(b"message digesT", der.as_bytes()).is_err());
    // r or s changed, or swapped: refused.
    let mut r1 = r.clone();
    r1[31] ^= 1;
    let mut s1 = s.clone();
    s1[31] ^= 1;
    for (r, s) in [(&r1, &s), (&r, &s1), (&s, &r)] {
        let der = sm2::dsa::Signature::from_slice(&[r.as_slice(), s.as_slice()].concat())
            .unwrap()
            .to_der();
        assert!(key.verify(b"message digest", der.as_bytes()).is_err());
    }
}

/// Our SM2 verification (variable time, fixed-base tables) against the `sm2` crate's own
/// (constant time, its own code): the same verdict on genuine signatures and on tampered
/// ones, over many keys, each used often enough to get its table.
#[test]
fn sm2_verification_agrees_with_the_sm2_crate() {
    use fapiao_crypto::{KeyAlgorithm, PrivateKey, SM2_DISTID};
    use sm2::dsa::signature::Verifier as _;
    use sm2::pkcs8::DecodePublicKey as _;
    let mut rng = fapiao_crypto::rng::system_rng();
    for i in 0..64_u8 {
        let key = PrivateKey::generate(KeyAlgorithm::Sm2, &mut rng);
        let public = key.public_key();
        let theirs = sm2::dsa::VerifyingKey::new(
            SM2_DISTID,
            sm2::PublicKey::from_public_key_der(&public.to_spki_der().unwrap()).unwrap(),
        )
        .unwrap();
        let message = [b"invoice ".as_slice(), &[i; 40]].concat();
        let der = key.sign(&message).unwrap();
        let sig = sm2::dsa::Signature::from_der(&der).unwrap();
        assert!(public.verify(&message, &der).is_ok());
        assert!(theirs.verify(&message, &sig).is_ok());
        let mut bytes = sig.to_bytes().to_vec();
        bytes[usize::from(i % 64)] ^= 1 << (i % 8);
        let mut other = message.clone();
        other[usize::from(i) % message.len()] ^= 0x20;
        let cases = [
            (
                message.as_slice(),
                sm2::dsa::Signature::from_slice(&bytes).ok(),
            ),
            (other.as_slice(), Some(sig)),
        ];
        for (m, s) in cases {
            let Some(s) = s else { continue };
            assert_eq!(
                public.verify(m, s.to_der().as_bytes()).is_ok(),
                theirs.verify(m, &s).is_ok(),
                "key {i}"
            );
            assert!(public.verify(m, s.to_der().as_bytes()).is_err(), "key {i}");
        }
        // From its second use a key verifies with its own table: fresh genuine signatures
        // still verify, and both verifiers still refuse a tampered one.
        for _ in 0..3 {
            let der = key.sign(&message).unwrap();
            assert!(public.verify(&message, &der).is_ok(), "key {i}");
            assert!(public.verify(&other, &der).is_err(), "key {i}");
        }
    }
}

/// RFC 6979 A.2.5: the P-256 key and its deterministic SHA-256 signatures of `"sample"` and
/// `"test"`. Our signer uses hedged random nonces, so the vector checks key import and
/// verification; a signature made here is checked by the `p256` crate's verifier.
#[test]
fn p256_ecdsa_examples_of_rfc_6979_a_2_5() {
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::pkcs8::EncodePrivateKey as _;
    let secret = p256::SecretKey::from_slice(&unhex(
        "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721",
    ))
    .unwrap();
    let key = fapiao_crypto::PrivateKey::from_pkcs8_der(secret.to_pkcs8_der().unwrap().as_bytes())
        .unwrap();
    let public = key.public_key();
    assert!(public.to_spki_der().unwrap().ends_with(&unhex(
        "04 60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
            7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
    )));
    let der = |r: &[u8], s: &[u8]| {
        p256::ecdsa::Signature::from_slice(&[r, s].concat())
            .unwrap()
            .to_der()
            .as_bytes()
            .to_vec()
    };
    for (message, r, s) in [
        (
            b"sample".as_slice(),
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
            "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
        ),
        (
            b"test".as_slice(),
            "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
            "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
        ),
    ] {
        let (r, s) = (unhex(r), unhex(s));
        public.verify(message, &der(&r, &s)).unwrap();
        assert!(public.verify(b"tesT", &der(&r, &s)).is_err());
        let mut r1 = r.clone();
        r1[31] ^= 1;
        let mut s1 = s.clone();
        s1[31] ^= 1;
        for (r, s) in [(&r1, &s), (&r, &s1), (&s, &r)] {
            assert!(public.verify(message, &der(r, s)).is_err());
        }
        // Ours, checked by the other implementation; and theirs (RFC 6979) by ours.
        let ours = key.sign(message).unwrap();
        let verifier = p256::ecdsa::VerifyingKey::from(secret.public_key());
        let sig = p256::ecdsa::Signature::from_der(&ours).unwrap();
        assert!(verifier.verify(message, &sig).is_ok());
        assert_ne!(ours, key.sign(message).unwrap(), "nonces are not reused");
        let theirs: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&secret).sign(message);
        assert_eq!(theirs.to_der().as_bytes(), der(&r, &s), "RFC 6979 nonce");
    }
}

#[test]
fn sm2_encryption_example_of_gb_t_32918_5_annex_a() {
    // GM/T 0009 ASN.1 form of the annex's C1, C3, C2.
    let ct = unhex(
        "307c 0220 04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73
              022100 E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0
              0420 59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766
              0413 21886CA989CA9C7D58087307CA93092D651EFA",
    );
    let plain = primitives::sm2_decrypt(&example_key(), &ct).unwrap();
    assert_eq!(plain.as_slice(), b"encryption standard");
}

#[test]
fn sm4_gcm_rfc_8998_appendix_a1() {
    use fapiao_crypto::aead::{AeadAlgorithm, AeadKey};
    let key = AeadKey::new(
        AeadAlgorithm::Sm4Gcm,
        &unhex("0123456789ABCDEFFEDCBA9876543210"),
    )
    .unwrap();
    let nonce: [u8; 12] = unhex("00001234567800000000ABCD").try_into().unwrap();
    let aad = unhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let plaintext = unhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFF EEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let expected = unhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D 5FD46FD3756489069157B282BB200735
         D82710CA5C22F0CCFA7CBF93D496AC15 A56834CBCF98C397B4024A2691233B8D
         83DE3541E4C2B58177E065A9BF7B62EC",
    );
    let sealed = key.seal(&nonce, &aad, &plaintext);
    assert_eq!(sealed, expected);
    assert_eq!(*key.open(&nonce, &aad, &sealed).unwrap(), plaintext);
    let mut altered = sealed.clone();
    altered[3] ^= 1;
    assert!(key.open(&nonce, &aad, &altered).is_err());
    assert!(key.open(&nonce, b"other", &sealed).is_err());
}

#[test]
fn aes_256_gcm_mcgrew_viega_test_case_16() {
    use fapiao_crypto::aead::{AeadAlgorithm, AeadKey};
    let key = AeadKey::new(
        AeadAlgorithm::Aes256Gcm,
        &unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
    )
    .unwrap();
    let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888").try_into().unwrap();
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let plaintext = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let expected = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662
         76fc6ece0f4e1768cddf8853bb2d551b",
    );
    let sealed = key.seal(&nonce, &aad, &plaintext);
    assert_eq!(sealed, expected);
    assert_eq!(*key.open(&nonce, &aad, &sealed).unwrap(), plaintext);
    assert!(AeadKey::new(AeadAlgorithm::Aes256Gcm, &[0; 16]).is_err());
}

/// Random keys, nonces, AAD and lengths, checked both ways against Python `cryptography`
/// (OpenSSL's GCM with its SM4 and AES).
#[test]
fn gcm_agrees_with_python_cryptography() {
    use fapiao_crypto::aead::{AeadAlgorithm, AeadKey};
    use rand_core::Rng;
    let mut rng = fapiao_crypto::rng::system_rng();
    for (algorithm, name) in [
        (AeadAlgorithm::Sm4Gcm, "SM4"),
        (AeadAlgorithm::Aes256Gcm, "AES"),
    ] {
        for len in [0_usize, 1, 15, 16, 17, 1000] {
            let mut raw = vec![0_u8; algorithm.key_len()];
            rng.fill_bytes(&mut raw);
            let key = AeadKey::new(algorithm, &raw).unwrap();
            let mut nonce = [0_u8; 12];
            rng.fill_bytes(&mut nonce);
            let mut msg = vec![0_u8; len];
            rng.fill_bytes(&mut msg);
            let aad = format!("invoices.record|k{len}");
            let ours = key.seal(&nonce, aad.as_bytes(), &msg);
            let script = format!(
                "import sys\n\
                 from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
                 k=bytes.fromhex('{k}'); n=bytes.fromhex('{n}'); a=b'{aad}'\n\
                 m=bytes.fromhex('{m}'); c=bytes.fromhex('{c}')\n\
                 d=Cipher(algorithms.{name}(k), modes.GCM(n, c[-16:])).decryptor()\n\
                 d.authenticate_additional_data(a)\n\
                 assert d.update(c[:-16]) + d.finalize() == m\n\
                 e=Cipher(algorithms.{name}(k), modes.GCM(n)).encryptor()\n\
                 e.authenticate_additional_data(a)\n\
                 out=e.update(m) + e.finalize()\n\
                 print((out + e.tag).hex())\n",
                k = hex(&raw),
                n = hex(&nonce),
                m = hex(&msg),
                c = hex(&ours),
            );
            let (ok, out) = crate::helpers::run("python3", &["-c", &script]);
            assert!(ok, "{name} len {len}: {out}");
            assert_eq!(out.trim(), hex(&ours), "{name} len {len}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    crate::helpers::hex(b)
}

/// OpenSSL's SM2 signatures (tests/data/sm2-openssl.txt): our verifier and the `sm2` crate's
/// accept each, and both refuse it with a changed message, `r` or `s` — three times each,
/// so the key's precomputed table (built on its second verification) is used as well.
#[test]
fn sm2_signatures_made_by_openssl_verify_in_both_verifiers() {
    use sm2::dsa::signature::Verifier as _;
    let text = include_str!("../data/sm2-openssl.txt");
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        let (point, message, der) = (unhex(fields[0]), unhex(fields[1]), unhex(fields[2]));
        let key = sm2::PublicKey::from_sec1_bytes(&point).unwrap();
        let theirs = sm2::dsa::VerifyingKey::new(fapiao_crypto::SM2_DISTID, key).unwrap();
        let ours = fapiao_crypto::PublicKey::Sm2(key);
        let signature = sm2::dsa::Signature::from_der(&der).unwrap();
        let (r, s) = (*signature.r(), *signature.s());
        let one = sm2::Scalar::ONE;
        let changed_r = sm2::dsa::Signature::from_scalars(r + one, s).unwrap();
        let changed_s = sm2::dsa::Signature::from_scalars(r, s + one).unwrap();
        let mut other = message.clone();
        other.push(0);
        for _ in 0..3 {
            for (m, sig, valid) in [
                (&message, &signature, true),
                (&other, &signature, false),
                (&message, &changed_r, false),
                (&message, &changed_s, false),
            ] {
                let der = sig.to_der().to_vec();
                assert_eq!(ours.verify(m, &der).is_ok(), valid, "line {n}");
                assert_eq!(theirs.verify(m, sig).is_ok(), valid, "line {n}");
            }
        }
        n += 1;
    }
    assert_eq!(n, 48);
}

/// Signatures at the edges of what SM2 verification must refuse, DER-encoded as an attacker
/// would send them: `r` or `s` of 0, `n` or `n + 1`.
#[test]
fn sm2_signatures_out_of_range_are_refused() {
    let key = fapiao_crypto::PrivateKey::generate(
        fapiao_crypto::KeyAlgorithm::Sm2,
        &mut fapiao_crypto::rng::system_rng(),
    );
    let public = key.public_key();
    let good = key.sign(b"m").unwrap();
    public.verify(b"m", &good).unwrap();
    let n = unhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123");
    let mut n_plus_one = n.clone();
    *n_plus_one.last_mut().unwrap() += 1;
    let der_int = |v: &[u8]| {
        let v: Vec<u8> = match v.iter().position(|b| *b != 0) {
            Some(i) => v[i..].to_vec(),
            None => vec![0],
        };
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push(u8::try_from(v.len() + usize::from(pad)).unwrap());
        if pad {
            out.push(0);
        }
        out.extend(v);
        out
    };
    let seq = |r: &[u8], s: &[u8]| {
        let body = [der_int(r), der_int(s)].concat();
        [vec![0x30, u8::try_from(body.len()).unwrap()], body].concat()
    };
    let valid_r = {
        let sig = sm2::dsa::Signature::from_der(&good).unwrap();
        sig.r().to_bytes().to_vec()
    };
    for (what, r, s) in [
        ("r = 0", vec![0], valid_r.clone()),
        ("s = 0", valid_r.clone(), vec![0]),
        ("r = n", n.clone(), valid_r.clone()),
        ("s = n", valid_r.clone(), n),
        ("r = n + 1", n_plus_one.clone(), valid_r.clone()),
        ("s = n + 1", valid_r, n_plus_one),
    ] {
        assert!(public.verify(b"m", &seq(&r, &s)).is_err(), "{what}");
    }
}
