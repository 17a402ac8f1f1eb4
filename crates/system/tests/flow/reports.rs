//! Platform's side of the agents' reports, spoken as the demo agent speaks them (its own
//! certificates and issuing device; no agent runs): many invoices and tax's receipts in one
//! `invoice.report_batch`, each checked and answered as if it came alone after the ones
//! before it, all recorded in one commit, one notice to cloud per invoice.

use fapiao_issuer::{IssuingDevice, NumberBlock, SignedInvoice};
use fapiao_model::red::{RedLetterForm, RedLetterFormNumber, RedReason, RedScope, plan_red};
use fapiao_model::{Order, OrderId, ProvinceCode, TaxCatalog};
use fapiao_protocol::client::china_now;
use fapiao_protocol::wire::{
    BlockRequest, FormWire, Issued, RangeGrant, Receipt, Report, ReportBatch, ReportItem,
    ReportResults, SignedReceipt, StatusNotice, TaxStatus, UploadStatus, WireInvoice, message_type,
};
use fapiao_protocol::{Code, EnvelopeClient, HttpsClient};
use fapiao_system::RoleConfig;

use crate::helpers::*;

/// The demo agent's identity towards platform, its device, and a block platform granted it.
struct AsAgent {
    platform: EnvelopeClient,
    device: IssuingDevice,
    block: NumberBlock,
}

async fn as_agent(env: &Env) -> AsAgent {
    let cfg = RoleConfig::load(&env.system.layout.config_path("agent")).unwrap();
    let material = fapiao_service::Material::load(&cfg.material).unwrap();
    let passphrase =
        std::fs::read_to_string(cfg.material.key_passphrase_file.as_ref().unwrap()).unwrap();
    let device = fapiao_agent::load_device(
        &cfg.devices_dir.clone().unwrap().join(format!("{HZ}.sign")),
        passphrase.trim_end().as_bytes(),
    )
    .unwrap();
    let http = HttpsClient::new(
        cfg.peers.platform_url.as_ref().unwrap(),
        material.client_config().unwrap(),
    )
    .unwrap();
    let platform = EnvelopeClient::new(
        http,
        material.party.clone(),
        material.trust.clone(),
        cfg.peers.platform_identity.clone().unwrap(),
    );
    let year = u8::try_from(china_now().year() % 100).unwrap();
    let province: u8 = HZ[2..4].parse().unwrap();
    let answer = platform
        .call(
            message_type::BLOCK_REQUEST,
            &BlockRequest {
                key: "block:reports-1".into(),
                year,
                province,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        answer.message_type,
        message_type::BLOCK_GRANT,
        "{}",
        String::from_utf8_lossy(&answer.payload)
    );
    let g: RangeGrant = answer.parse("platform").unwrap();
    let block = NumberBlock::resume(
        g.year,
        ProvinceCode::parse(&format!("{:02}", g.province)).unwrap(),
        g.channel,
        g.first,
        g.last,
        g.first,
    )
    .unwrap();
    AsAgent {
        platform,
        device,
        block,
    }
}

impl AsAgent {
    fn blue(&mut self, order_id: &str) -> SignedInvoice {
        let order = Order::from_json(&order(HZ, order_id, "30.00").to_string()).unwrap();
        let draft = order.validate(&TaxCatalog::builtin()).unwrap();
        self.device
            .issue(draft, &mut self.block, china_now())
            .unwrap()
    }

    /// A full red of `blue` under red-letter form `sequence` of the day.
    fn red(&mut self, blue: &SignedInvoice, order_id: &str, sequence: i64) -> Issued {
        let prefix = RedLetterFormNumber::day_prefix(HZ, china_now().date());
        let form = RedLetterForm::open_by_seller(
            RedLetterFormNumber::in_day(&prefix, sequence).unwrap(),
            blue.invoice.number().clone(),
            RedReason::parse("01").unwrap(),
            RedScope::Full,
            false,
        )
        .unwrap();
        let draft = plan_red(
            &blue.invoice,
            &[],
            &form,
            Some(OrderId::parse(order_id).unwrap()),
            None,
        )
        .unwrap();
        let red = self
            .device
            .issue(draft, &mut self.block, china_now())
            .unwrap();
        Issued {
            form: Some(FormWire::from(&form)),
            ..issued(&red, order_id)
        }
    }

    async fn send(&self, items: &[ReportItem]) -> Vec<Option<String>> {
        let answer = self
            .platform
            .call(
                message_type::INVOICE_REPORT_BATCH,
                &ReportBatch {
                    enterprise: HZ.into(),
                    items: items.to_vec(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            answer.message_type,
            message_type::REPORT_RESULTS,
            "{}",
            String::from_utf8_lossy(&answer.payload)
        );
        let results: ReportResults = answer.parse("platform").unwrap();
        assert_eq!(results.results.len(), items.len());
        results
            .results
            .into_iter()
            .map(|r| r.map(|r| r.code))
            .collect()
    }
}

fn issued(signed: &SignedInvoice, order_id: &str) -> Issued {
    Issued {
        order_id: order_id.into(),
        request_hash: "0".repeat(64),
        invoice: WireInvoice::from_signed(signed).unwrap(),
        form: None,
    }
}

/// A status report whose receipt names `number` (its signature is never looked at: platform
/// finds no invoice under the number first).
fn receipt_for(number: &str) -> ReportItem {
    ReportItem::Status(Box::new(StatusNotice {
        number: number.into(),
        enterprise: HZ.into(),
        tax_status: TaxStatus::Accepted,
        reason: None,
        receipt: Some(SignedReceipt {
            receipt: Receipt {
                number: number.into(),
                status: UploadStatus::Accepted,
                code: None,
                reason: None,
                content_hash: "00".repeat(32),
                accepted_at: None,
                receipt_id: "r-1".into(),
            },
            signature: String::new(),
            certificate: String::new(),
        }),
        issued: None,
    }))
}

async fn notify_entries(env: &Env, number: &str) -> i64 {
    fapiao_store::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'notify' AND number = $1")
        .bind(number)
        .fetch_one(env.system.platform.db().pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_batch_is_checked_item_by_item_in_order_and_recorded_at_once() {
    let env = Env::start().await;
    let mut agent = as_agent(&env).await;
    let blue = agent.blue("RB-1");
    // Its red in the same batch, after it: checked against the blue just recorded.
    let red = agent.red(&blue, "RB-1R", 90_000_001);
    let red_number = red.invoice.number().unwrap();
    let mut forged = issued(&agent.blue("RB-2"), "RB-2");
    let other = agent.blue("RB-3");
    forged.invoice.signature = WireInvoice::from_signed(&other).unwrap().signature;
    let items = vec![
        ReportItem::Invoice(issued(&blue, "RB-1")),
        ReportItem::Invoice(red),
        receipt_for("33999999999999999999"),
        ReportItem::Invoice(forged),
        ReportItem::Invoice(issued(&other, "RB-3")),
    ];
    let out_of_order = Some(Code::ReportOutOfOrder.as_str().to_owned());
    let rejected = Some(Code::ReportRejected.as_str().to_owned());
    let expected = vec![None, None, out_of_order.clone(), rejected.clone(), None];
    assert_eq!(agent.send(&items).await, expected);

    let platform = &env.system.platform;
    let blue_number = blue.invoice.number().as_str();
    for n in [
        blue_number,
        red_number.as_str(),
        other.invoice.number().as_str(),
    ] {
        let p = platform.invoice(n).await.unwrap().unwrap();
        assert_eq!(p.enterprise, HZ);
        assert_eq!(p.tax_status, TaxStatus::Pending);
        assert_eq!(notify_entries(&env, n).await, 1, "{n}");
    }
    let p = platform.invoice(&red_number).await.unwrap().unwrap();
    assert_eq!(p.kind, "red");
    assert!(p.form.is_some());
    // The forged one is not on record; nothing of it was written.
    let forged_number = items[3].clone();
    let ReportItem::Invoice(forged) = forged_number else {
        unreachable!()
    };
    let forged_number = forged.invoice.number().unwrap();
    assert!(platform.invoice(&forged_number).await.unwrap().is_none());
    assert_eq!(notify_entries(&env, &forged_number).await, 0);

    // The same batch again (its answer lost): the same answers, nothing written twice.
    assert_eq!(agent.send(&items).await, expected);
    assert_eq!(notify_entries(&env, blue_number).await, 1);

    // A second red of the blue is checked against the first: nothing is left to reverse.
    let again = agent.red(&blue, "RB-1R2", 90_000_002);
    let red_invalid = Some(Code::ReportRejected.as_str().to_owned());
    assert_eq!(
        agent.send(&[ReportItem::Invoice(again)]).await,
        [red_invalid]
    );

    // The single message is a batch of one: a report answered `ack`.
    let single = agent.blue("RB-4");
    let answer = agent
        .platform
        .call(
            message_type::INVOICE_REPORT,
            &Report {
                enterprise: HZ.into(),
                issued: issued(&single, "RB-4"),
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.message_type, message_type::ACK);
    assert!(
        platform
            .invoice(single.invoice.number().as_str())
            .await
            .unwrap()
            .is_some()
    );
    // A batch for another enterprise is refused whole.
    let answer = agent
        .platform
        .call(
            message_type::INVOICE_REPORT_BATCH,
            &ReportBatch {
                enterprise: SH.into(),
                items: vec![ReportItem::Invoice(issued(&single, "RB-4"))],
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.message_type, message_type::REFUSAL);

    // Cloud hears of each invoice recorded, once, with the invoice itself.
    let erp = env.erp(HZ);
    for n in [
        blue_number,
        red_number.as_str(),
        other.invoice.number().as_str(),
    ] {
        let path = format!("/v1/invoices/{n}");
        wait_for(&format!("{n} at cloud"), || async {
            get(&erp, &path).await.status == 200
        })
        .await;
    }
    env.system.shutdown().await;
}
