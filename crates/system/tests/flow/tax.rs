//! The tax reference's own checks, with uploads made by hand as the platform: duplicates get
//! the original receipt, a different invoice under a used number is refused and flagged, a
//! number outside the uploader's ranges, a bad signature and wrong arithmetic are refused, a red
//! whose blue is not on record yet is `processing`.

use fapiao_crypto::PrivateKey;
use fapiao_issuer::{IssuingDevice, NumberBlock};
use fapiao_model::red::{
    Confirmation, Initiator, RedLetterForm, RedLetterFormNumber, RedReason, RedScope, plan_red,
};
use fapiao_model::{Invoice, Order, ProvinceCode, TaxCatalog};
use fapiao_protocol::wire::{SignedReceipt, WireInvoice};
use serde_json::{Value, json};
use time::{PrimitiveDateTime, UtcOffset};

use crate::helpers::*;

fn china_now() -> PrimitiveDateTime {
    let t = crate::now()
        .to_offset(UtcOffset::from_hms(8, 0, 0).unwrap())
        .replace_nanosecond(0)
        .unwrap();
    PrimitiveDateTime::new(t.date(), t.time())
}

fn device(env: &Env) -> IssuingDevice {
    let dir = env.system.layout.dir();
    let pass = std::fs::read_to_string(env.system.layout.passphrase_file()).unwrap();
    let key = PrivateKey::from_encrypted_pem(
        &std::fs::read_to_string(dir.join(format!("devices/{SH}.sign.key.pem"))).unwrap(),
        pass.trim().as_bytes(),
    )
    .unwrap();
    let cert = fapiao_crypto::Certificate::from_pem(
        &std::fs::read_to_string(dir.join(format!("devices/{SH}.sign.crt.pem"))).unwrap(),
    )
    .unwrap();
    IssuingDevice::new(key, cert).unwrap()
}

/// Signs `order` under sequence `seq` of SH's province, this year, channel 0.
fn signed(env: &Env, order: &Value, seq: u64) -> fapiao_issuer::SignedInvoice {
    signed_at(env, order, seq, china_now())
}

/// [`signed`], dated `at` (China time).
fn signed_at(
    env: &Env,
    order: &Value,
    seq: u64,
    at: PrimitiveDateTime,
) -> fapiao_issuer::SignedInvoice {
    let draft = Order::from_json(&order.to_string())
        .unwrap()
        .validate(&TaxCatalog::builtin())
        .unwrap();
    let year = u8::try_from(at.year() % 100).unwrap();
    let mut block =
        NumberBlock::new(year, ProvinceCode::parse("31").unwrap(), 0, seq, seq).unwrap();
    device(env).issue(draft, &mut block, at).unwrap()
}

async fn upload(tax: &Sender, invoice: &WireInvoice) -> SignedReceipt {
    let r = tax
        .post(tax.seal("invoice.upload", 1, &json!({ "invoice": invoice })))
        .await;
    assert_eq!(r.status, 200, "{}", json_of(&r));
    let (t, v) = tax.open(&r);
    assert_eq!(t, "upload.receipt", "{v}");
    serde_json::from_value(v).unwrap()
}

/// Rewrites the record's 价税合计 (the signature no longer matches it).
fn set_total(wire: &mut WireInvoice, total: &str) {
    let mut record: Value = serde_json::from_str(wire.invoice.get()).unwrap();
    record["totals"]["total"] = json!(total);
    wire.invoice = serde_json::value::to_raw_value(&record).unwrap();
}

fn outcome(r: &SignedReceipt) -> (String, Option<String>) {
    (
        serde_json::to_value(r.receipt.status)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        r.receipt.code.clone(),
    )
}

/// One invoice issued through the ERP API and accepted by tax, and a sender to tax as the
/// platform.
async fn accepted_and_tax(
    env: &Env,
    order_id: &str,
) -> (String, fapiao_platform::issue::StoredInvoice, Sender) {
    let r = post(&env.erp(SH), "/v1/invoices", &order(SH, order_id, "10")).await;
    assert_eq!(r.status, 201);
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    settle(env).await;
    let original = env.system.platform.invoice(&number).await.unwrap().unwrap();
    let tax = Sender::to(
        env,
        &env.system.layout.pki_prefix("platform"),
        "tax",
        env.system.ports.tax,
    );
    (number, original, tax)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tax_checks_what_it_accepts() {
    let env = Env::start().await;
    let (number, original, tax) = accepted_and_tax(&env, "TAX-1").await;
    let first = original.receipt.clone().unwrap();
    let trust = env.trust();

    // The same invoice again: duplicate, with the original acceptance.
    let again = upload(&tax, &original.invoice).await;
    again.verify(&trust, crate::now()).unwrap();
    assert_eq!(outcome(&again), ("duplicate".into(), None));
    assert_eq!(again.receipt.accepted_at, first.receipt.accepted_at);

    // Another invoice under that number: refused and flagged.
    let seq = fapiao_model::InvoiceNumber::parse(&number)
        .unwrap()
        .sequence();
    let other = signed(&env, &order(SH, "TAX-OTHER", "11"), seq);
    let r = upload(&tax, &WireInvoice::from_signed(&other).unwrap()).await;
    assert_eq!(
        outcome(&r),
        ("failed".into(), Some("upload_conflict".into()))
    );
    assert_eq!(
        env.system.tax.flagged().await.unwrap(),
        vec![number.clone()]
    );

    // A number in no range granted to the platform (ranges are 500 numbers in the tests).
    let outside = signed(&env, &order(SH, "TAX-OUT", "12"), 900_000);
    let r = upload(&tax, &WireInvoice::from_signed(&outside).unwrap()).await;
    assert_eq!(
        outcome(&r),
        ("failed".into(), Some("upload_number_not_granted".into()))
    );

    // A signature that does not verify.
    let mut forged =
        WireInvoice::from_signed(&signed(&env, &order(SH, "TAX-SIG", "13"), 400)).unwrap();
    let mut sig = fapiao_protocol::wire::unb64(&forged.signature.value, "v").unwrap();
    let n = sig.len();
    sig[n - 3] ^= 1;
    forged.signature.value = fapiao_protocol::wire::b64(&sig);
    let r = upload(&tax, &forged).await;
    assert_eq!(
        outcome(&r),
        ("failed".into(), Some("upload_signature_invalid".into()))
    );

    // Totals that do not add up.
    let mut wrong =
        WireInvoice::from_signed(&signed(&env, &order(SH, "TAX-SUM", "14"), 401)).unwrap();
    set_total(&mut wrong, "1.00");
    let r = upload(&tax, &wrong).await;
    assert_eq!(
        outcome(&r),
        ("failed".into(), Some("upload_arithmetic".into()))
    );

    // Dated after tax's clock: an issuer whose clock is ahead. Two minutes are tolerated;
    // three are refused.
    let late = |seq, minutes| {
        let at = china_now() + time::Duration::minutes(minutes);
        WireInvoice::from_signed(&signed_at(
            &env,
            &order(SH, &format!("TAX-LATE-{seq}"), "9"),
            seq,
            at,
        ))
        .unwrap()
    };
    let r = upload(&tax, &late(404, 3)).await;
    assert_eq!(
        outcome(&r),
        ("failed".into(), Some("upload_issued_in_future".into()))
    );
    assert!(
        r.receipt
            .reason
            .as_deref()
            .unwrap()
            .contains("the issuer's clock is ahead"),
        "{r:?}"
    );
    assert_eq!(
        outcome(&upload(&tax, &late(405, 1)).await),
        ("accepted".into(), None)
    );

    // A red before its blue: processing; once the blue is on record, accepted.
    let blue = signed(&env, &order(SH, "TAX-BLUE", "15"), 402);
    let red_wire = red_of(&env, &blue, 403, "31011526112400000099");
    assert_eq!(
        outcome(&upload(&tax, &red_wire).await),
        ("processing".into(), None)
    );
    assert_eq!(
        outcome(&upload(&tax, &WireInvoice::from_signed(&blue).unwrap()).await),
        ("accepted".into(), None)
    );
    assert_eq!(
        outcome(&upload(&tax, &red_wire).await),
        ("accepted".into(), None)
    );

    // Only those two, the one dated a minute ahead and the first invoice are on record,
    // each accepted once.
    let accepted = env.system.tax.accepted().await.unwrap();
    assert_eq!(accepted.len(), 4);
    assert!(accepted.iter().all(|a| a.acceptances == 1));
    env.system.shutdown().await;
}

/// Red `seq` reversing all of `blue`, on red-letter form `form`.
fn red_of(env: &Env, blue: &fapiao_issuer::SignedInvoice, seq: u64, form: &str) -> WireInvoice {
    let form = RedLetterForm::open(
        RedLetterFormNumber::parse(form).unwrap(),
        blue.invoice.number().clone(),
        RedReason::parse("01").unwrap(),
        Initiator::Seller,
        Confirmation::NotRequired,
        RedScope::Full,
    )
    .unwrap();
    let draft = plan_red(&blue.invoice, &[] as &[Invoice], &form, None, None).unwrap();
    let at = china_now();
    let year = u8::try_from(at.year() % 100).unwrap();
    let mut block =
        NumberBlock::new(year, ProvinceCode::parse("31").unwrap(), 0, seq, seq).unwrap();
    WireInvoice::from_signed(&device(env).issue(draft, &mut block, at).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tax_answers_an_upload_batch_as_it_would_each_upload_alone() {
    let env = Env::start().await;
    let (number, original, tax) = accepted_and_tax(&env, "TAXB-1").await;
    let trust = env.trust();
    let seq = fapiao_model::InvoiceNumber::parse(&number)
        .unwrap()
        .sequence();
    let conflicting = signed(&env, &order(SH, "TAXB-OTHER", "11"), seq);
    let outside = signed(&env, &order(SH, "TAXB-OUT", "12"), 900_000);
    let blue = signed(&env, &order(SH, "TAXB-BLUE", "15"), 410);
    let red = red_of(&env, &blue, 411, "31011526112400000098");
    let blue = WireInvoice::from_signed(&blue).unwrap();
    let mut forged =
        WireInvoice::from_signed(&signed(&env, &order(SH, "TAXB-SIG", "13"), 412)).unwrap();
    set_total(&mut forged, "1.00");
    // In order, within one commit: the red before its blue waits, the blue is accepted, the
    // red after it is accepted, the blue again is a duplicate of what this very batch recorded.
    let batch = [
        original.invoice.clone(),
        WireInvoice::from_signed(&conflicting).unwrap(),
        WireInvoice::from_signed(&outside).unwrap(),
        red.clone(),
        blue.clone(),
        red.clone(),
        blue.clone(),
        forged,
    ];
    let r = tax
        .post(tax.seal("invoice.upload_batch", 1, &json!({ "invoices": batch })))
        .await;
    assert_eq!(r.status, 200, "{}", json_of(&r));
    let (t, v) = tax.open(&r);
    assert_eq!(t, "upload.receipts", "{v}");
    let receipts: Vec<SignedReceipt> = serde_json::from_value(v["receipts"].clone()).unwrap();
    let outcomes: Vec<(String, Option<String>)> = receipts.iter().map(outcome).collect();
    let expect = |s: &str, c: Option<&str>| (s.to_owned(), c.map(str::to_owned));
    assert_eq!(
        outcomes,
        [
            expect("duplicate", None),
            expect("failed", Some("upload_conflict")),
            expect("failed", Some("upload_number_not_granted")),
            expect("processing", None),
            expect("accepted", None),
            expect("accepted", None),
            expect("duplicate", None),
            expect("failed", Some("upload_arithmetic")),
        ]
    );
    // Each receipt is signed by tax on its own and answers its own invoice.
    for (receipt, wire) in receipts.iter().zip(&batch) {
        receipt.verify(&trust, crate::now()).unwrap();
        assert_eq!(
            Some(receipt.receipt.number.as_str()),
            wire.number().as_deref()
        );
    }
    let red_number = red.number().unwrap();
    let blue_number = blue.number().unwrap();
    receipts[5]
        .verify_for(&red.to_signed().unwrap(), &trust, crate::now())
        .unwrap();
    assert_eq!(receipts[4].receipt.number, blue_number);
    assert_eq!(
        receipts[6].receipt.accepted_at,
        receipts[4].receipt.accepted_at
    );

    // On record: the first invoice, the blue and its red, each accepted once; the conflict
    // is flagged.
    let accepted = env.system.tax.accepted().await.unwrap();
    let mut on_record: Vec<&str> = accepted.iter().map(|a| a.number.as_str()).collect();
    on_record.sort_unstable();
    let mut want = vec![number.as_str(), &blue_number, &red_number];
    want.sort_unstable();
    assert_eq!(on_record, want);
    assert!(accepted.iter().all(|a| a.acceptances == 1));
    assert_eq!(
        env.system.tax.flagged().await.unwrap(),
        vec![number.clone()]
    );

    // An empty batch and one over the limit are refused whole; nothing more is recorded.
    for n in [0, 65] {
        let invoices = vec![original.invoice.clone(); n];
        let r = tax
            .post(tax.seal("invoice.upload_batch", 1, &json!({ "invoices": invoices })))
            .await;
        assert_eq!(r.status, 200);
        let (t, v) = tax.open(&r);
        assert_eq!(
            (t.as_str(), v["code"].as_str()),
            ("refusal", Some("invalid_request")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap().contains("1 to 64"), "{v}");
    }
    // A body of the wrong shape is refused naming the message type and what is wrong.
    let r = tax
        .post(tax.seal("invoice.upload_batch", 1, &json!({ "invoices": "none" })))
        .await;
    let (t, v) = tax.open(&r);
    assert_eq!(
        (t.as_str(), v["code"].as_str()),
        ("refusal", Some("invalid_request")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.starts_with("invoice.upload_batch body: invalid type: string \"none\""),
        "{v}"
    );
    assert_eq!(env.system.tax.accepted().await.unwrap().len(), 3);
    env.system.shutdown().await;
}

/// Tax refusing what platform uploads, end to end: a different invoice is already on record
/// under the number platform issues next, so tax refuses platform's with `upload_conflict`;
/// platform records the refusal (invoice failed with the reason, its upload entry failed) in
/// the same batch as an accepted one, and tells cloud, whose ERP API shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_recorded_by_platform_and_shown_to_the_erp() {
    let env = Env::start().await;
    let (number, _, tax) = accepted_and_tax(&env, "REF-1").await;
    let n = fapiao_model::InvoiceNumber::parse(&number).unwrap();
    let taken = signed(&env, &order(SH, "REF-OTHER", "11"), n.sequence() + 1);
    let r = upload(&tax, &WireInvoice::from_signed(&taken).unwrap()).await;
    assert_eq!(outcome(&r), ("accepted".into(), None));

    let erp = env.erp(SH);
    let mut numbers = Vec::new();
    for id in ["REF-2", "REF-3"] {
        let r = post(&erp, "/v1/invoices", &order(SH, id, "10")).await;
        assert_eq!(r.status, 201);
        numbers.push(json_of(&r)["number"].as_str().unwrap().to_owned());
    }
    let (refused, accepted) = (&numbers[0], &numbers[1]);
    assert_eq!(refused, &taken.invoice.number().as_str());
    settle(&env).await;

    let p = env.system.platform.invoice(refused).await.unwrap().unwrap();
    assert_eq!(p.tax_status, fapiao_protocol::wire::TaxStatus::Failed);
    assert!(
        p.tax_reason
            .as_deref()
            .unwrap_or("")
            .contains("upload_conflict"),
        "{:?}",
        p.tax_reason
    );
    assert!(p.receipt.is_some());
    let failed = env.system.platform.outbox("failed").await.unwrap();
    assert!(
        failed
            .iter()
            .any(|e| e.kind == "upload" && &e.number == refused && e.last_error.is_some()),
        "{failed:?}"
    );
    let p = env
        .system
        .platform
        .invoice(accepted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.tax_status, fapiao_protocol::wire::TaxStatus::Accepted);
    assert_eq!(p.tax_reason, None);

    let erp = std::sync::Arc::new(erp);
    for (n, status) in [(refused, "failed"), (accepted, "accepted")] {
        let path = format!("/v1/invoices/{n}");
        wait_for("cloud to be told", || {
            let (erp, path) = (erp.clone(), path.clone());
            async move { json_of(&get(&erp, &path).await)["tax_status"] == status }
        })
        .await;
    }
    let v = json_of(&get(&erp, &format!("/v1/invoices/{refused}")).await);
    assert!(
        v["tax_reason"]
            .as_str()
            .unwrap_or("")
            .contains("upload_conflict"),
        "{v}"
    );
}
