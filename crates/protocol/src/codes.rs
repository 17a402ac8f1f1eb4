//! Stable error codes. Every refusal any role gives (ERP API, envelopes, uploads) carries one
//! of these; a code's meaning never changes once published. `docs/ERROR-CODES.md` is rendered
//! from [`Code::ALL`] by [`markdown`] and a test keeps the two equal.

macro_rules! codes {
    ($($variant:ident = $text:literal, $status:literal, $retry:literal, $doc:literal;)*) => {
        /// A stable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $(#[doc = $doc] $variant,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The snake_case code on the wire.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }

            /// The HTTP status the ERP API answers with.
            #[must_use]
            pub fn http_status(self) -> u16 {
                match self { $(Self::$variant => $status,)* }
            }

            /// Whether the same request may succeed later unchanged.
            #[must_use]
            pub fn retryable(self) -> bool {
                match self { $(Self::$variant => $retry,)* }
            }

            /// What it means.
            #[must_use]
            pub fn description(self) -> &'static str {
                match self { $(Self::$variant => $doc,)* }
            }

            /// The code for `text`, if it is one.
            #[must_use]
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    InvalidRequest = "invalid_request", 400, false,
        "The request is not well-formed: unreadable JSON, a missing or malformed parameter.";
    Unauthenticated = "unauthenticated", 401, false,
        "The ERP request carries no valid signature: missing headers, unknown key id, or a signature that does not verify.";
    RequestStale = "request_stale", 401, false,
        "The signed timestamp is outside the accepted window (five minutes each side).";
    RequestReplayed = "request_replayed", 401, false,
        "The nonce of this signed request was already used.";
    RateLimited = "rate_limited", 429, true,
        "Too many requests from this enterprise or client address; retry after the Retry-After seconds.";
    RequestTimeout = "request_timeout", 503, true,
        "The request took longer than the server allows; retry (issuing is idempotent by order_id).";
    PeerCertificateRequired = "peer_certificate_required", 401, false,
        "The endpoint is for roles: the TLS client certificate of a Fapiao role is required.";
    Forbidden = "forbidden", 403, false,
        "The certificate's holder may not do this: admin ports answer operators (everything), auditors (reading) and monitors (/metrics), never the roles' service certificates.";
    NotFound = "not_found", 404, false,
        "No such resource.";
    InvoiceNotFound = "invoice_not_found", 404, false,
        "No invoice with this number belongs to the enterprise.";
    MethodNotAllowed = "method_not_allowed", 405, false,
        "The resource exists but not with this method (the `allow` header lists those it has).";
    RequestTooLarge = "request_too_large", 413, false,
        "The request body is over the limit (`max_body_bytes` for the ERP API, 4 MiB for envelopes); nothing of it was acted on.";
    OrderConflict = "order_conflict", 409, false,
        "This order_id was already used with a different request body; the original stands.";
    LimitReached = "limit_reached", 409, false,
        "The enterprise has as many of this resource as it may (16 webhook endpoints); delete one first.";
    InvalidOrder = "invalid_order", 422, false,
        "The order breaks the invoice rules; `findings` lists every problem with its field path.";
    RedInvalid = "red_invalid", 422, false,
        "The red invoice request breaks the red-letter rules (over what remains of the blue, a partial red without buyer confirmation, a red of a red, ...).";
    EnvelopeMalformed = "envelope_malformed", 400, false,
        "The body is not a well-formed envelope of the suite.";
    EnvelopeNotForUs = "envelope_not_for_us", 400, false,
        "The envelope is encrypted to another party.";
    EnvelopeRejected = "envelope_rejected", 403, false,
        "The envelope failed a check after decryption (signature, certificate, sender, recipient, version, freshness or replay); the detail stays in the receiver's log.";
    EnvelopeUnavailable = "envelope_unavailable", 503, true,
        "The receiver could not consult its replay guard.";
    ProtocolVersionUnsupported = "protocol_version_unsupported", 400, false,
        "The message's protocol version is not one the receiver speaks.";
    CloudNotRegistered = "cloud_not_registered", 403, false,
        "The sending cloud platform is not registered with the e-invoice service platform.";
    EnterpriseUnknown = "enterprise_unknown", 403, false,
        "The enterprise is not registered.";
    EnterpriseOfAnotherCloud = "enterprise_of_another_cloud", 403, false,
        "The enterprise is registered under another cloud platform.";
    EnterpriseSuspended = "enterprise_suspended", 403, false,
        "The enterprise is suspended and may not issue.";
    InvoiceTypeNotAllowed = "invoice_type_not_allowed", 403, false,
        "The enterprise is not qualified for this invoice type.";
    OverInvoiceLimit = "over_invoice_limit", 422, false,
        "The invoice's total (价税合计) exceeds the enterprise's per-invoice limit.";
    OverQuota = "over_quota", 422, false,
        "Issuing would take the month's issued total past the enterprise's credit quota.";
    NumbersExhausted = "numbers_exhausted", 503, true,
        "No invoice number is available; more are being requested from tax.";
    PlatformUnavailable = "platform_unavailable", 503, true,
        "The e-invoice service platform could not be reached or did not answer; retry with the same order_id.";
    OutcomeUnknown = "outcome_unknown", 503, true,
        "Cloud: the platform issued the invoice but cloud could not store it (its database failed). The invoice exists: send the same order (same order_id and body) again to get it; cloud also fetches it from the platform on its own.";
    OfdUnavailable = "ofd_unavailable", 409, false,
        "The invoice's OFD cannot be signed by the device that issued it here: an enterprise's own device (an agent) issued it — the enterprise signs its OFD where that device is (`fapiao render <invoice.json> --device … --ofd`) — or the hosted device's key was replaced since. Its PDF and XML are available.";
    UploadNumberNotGranted = "upload_number_not_granted", 422, false,
        "Tax: the invoice number lies in no range granted to the uploader.";
    UploadSignatureInvalid = "upload_signature_invalid", 422, false,
        "Tax: the issuing device's signature or certificate does not check.";
    UploadArithmetic = "upload_arithmetic", 422, false,
        "Tax: the invoice's amounts, taxes or totals do not add up.";
    UploadIssuedInFuture = "upload_issued_in_future", 422, false,
        "Tax: the invoice is dated after tax's clock plus its tolerance (the issuer's clock is ahead).";
    UploadConflict = "upload_conflict", 409, false,
        "Tax: a different invoice was already accepted under this number; the upload is flagged.";
    ReportRejected = "report_rejected", 422, false,
        "Platform: an agent's report does not check (device of another enterprise, number outside the blocks granted to the agent, signature, arithmetic, red rules).";
    ReportOutOfOrder = "report_out_of_order", 409, true,
        "Platform: a status report for an invoice the agent has not reported yet; send the invoice first.";
    TaxUnavailable = "tax_unavailable", 503, true,
        "Platform: tax could not be reached to record a number block for an agent; retry with the same key.";
    Internal = "internal", 500, true,
        "An unexpected failure; nothing was changed. The request id identifies it in the logs.";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `docs/ERROR-CODES.md`.
#[must_use]
pub fn markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Generated from `crates/protocol/src/codes.rs` (a test keeps this file equal to it). \
         Every error the ERP API returns is JSON \
         `{\"code\", \"message\", \"request_id\", \"retryable\", \"findings\"?}`; envelope answers \
         between roles carry the same codes. A code's meaning never changes.\n\n\
         | code | HTTP | retryable | meaning |\n|---|---|---|---|\n",
    );
    for c in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.as_str(),
            c.http_status(),
            if c.retryable() { "yes" } else { "no" },
            c.description().replace('|', "\\|")
        ));
    }
    out
}
