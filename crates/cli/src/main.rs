//! `fapiao`: the command-line tool of the Fapiao e-invoice system.
//!
//! Commands are listed only when they work. Exit status: 0 success; 1 "did not pass" (an
//! envelope that was rejected); 2 invalid input or an error (findings or the error chain on
//! stderr).

#![expect(
    clippy::print_stdout,
    reason = "printing results is the command line's job"
)]

mod bench;
mod clock;
mod envelope;
mod pki;
mod preview;
mod render;
mod replicas;
mod services;
mod text;
mod verify;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fapiao_crypto::Suite;

/// mimalloc, not glibc's allocator: batched orders move buffers of hundreds of KB, whose
/// frees make glibc consolidate its free lists (a fifth of the CPU of `fapiao bench --batch
/// 100` in glibc's `malloc`/`free`; half that with mimalloc, for about 35 MiB more resident).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fapiao issues Chinese electronic VAT invoices (数电票) secured with SM2/SM3/SM4.
#[derive(Debug, Parser)]
#[command(name = "fapiao", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an order and print the invoice it would become (not numbered, not signed).
    ///
    /// Every problem in the order is reported with its field path; the exit status is then 2.
    Preview(PreviewArgs),
    /// Write an invoice's layout files: the 数电票 XML and the PDF (PDF/A-3 with the XML inside).
    Render(RenderArgs),
    /// Check a downloaded invoice offline (XML, or the XML inside its PDF or OFD): the schema, the
    /// issuing device's signature and certificate, and with --receipt tax's receipt. Exit
    /// status 0 valid, 1 invalid (the first reason printed), 2 unusable arguments.
    Verify(VerifyArgs),
    /// The certificate authority: root CAs per suite, certificates by profile, revocation, CRLs.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Seal or open a signed and encrypted envelope by hand.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    /// Run the whole system on loopback: tax, platform and cloud, each on its own TLS port
    /// with its own SQLite file. The first run creates a development CA, certificates for
    /// every role, demo enterprises and their ERP credentials under --data; later runs reuse
    /// them.
    Up(UpArgs),
    /// Run one role as its own process from a configuration file (see examples/config/).
    Serve {
        /// cloud, platform, tax or agent.
        role: String,
        /// The role's TOML configuration (FAPIAO_… environment variables override it).
        #[arg(long)]
        config: PathBuf,
    },
    /// Compare what a role holds with its peers and show the differences: for cloud, the
    /// invoices platform issued for its enterprises that cloud lacks or holds with another
    /// tax status (platform's mirrors tax's receipts). Exit status 0 when none differ, 1
    /// otherwise (after --repair: when some could not be repaired).
    Reconcile {
        /// The role (cloud).
        #[arg(long)]
        role: String,
        /// The role's TOML configuration.
        #[arg(long, conflicts_with = "data")]
        config: Option<PathBuf>,
        /// Data directory of `fapiao up` (its cloud.toml).
        #[arg(long, default_value = "fapiao-data")]
        data: PathBuf,
        /// Invoices issued at or after this China time (`YYYY-MM-DD HH:MM:SS`); default: the
        /// last `--days`.
        #[arg(long)]
        from: Option<String>,
        /// Days back when --from is not given.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Store what is missing and apply platform's status where it differs.
        #[arg(long)]
        repair: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue an invoice for an order, as the enterprise's ERP would (signed API request).
    Issue {
        /// The order (JSON, see examples/orders/).
        order: PathBuf,
        #[command(flatten)]
        target: ErpTarget,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a red invoice reversing a blue one, fully or by lines.
    Red {
        /// The blue invoice's 20-digit number.
        number: String,
        /// 冲红原因: 01 开票有误, 02 销货退回, 03 服务中止, 04 销售折让.
        #[arg(long)]
        reason: String,
        /// Reverse part of a line: `N:amount=X` or `N:quantity=Q` (repeatable); without it
        /// the whole remaining invoice is reversed.
        #[arg(long = "line")]
        lines: Vec<String>,
        /// The buyer's confirmation reference (required for partial reds: the form then
        /// needs both sides).
        #[arg(long)]
        buyer_confirmation: Option<String>,
        /// Order id of the red (default: generated).
        #[arg(long)]
        order_id: Option<String>,
        /// 开票人 of the red (default: the blue invoice's).
        #[arg(long)]
        drawer: Option<String>,
        #[command(flatten)]
        target: ErpTarget,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Operate the e-invoice service platform through its admin API.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// The audit trail of a role.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The keys of a role's encryption at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Retention: export, then delete, what is older than the role's retention periods.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// A role's database: create it and bring its schema up to this build's.
    #[command(subcommand)]
    Db(DbCommand),
    /// The enterprise's front-end agent (async, enterprise-hosted issuing).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Measure the issuing pipeline: the whole system in this process (as `up` starts it),
    /// driven through the ERP API by concurrent signed clients, against the crypto bound.
    Bench(BenchArgs),
}

/// `fapiao bench` options.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Invoices in the closed-loop (maximum throughput) run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    count: u32,
    /// Concurrent ERP clients in the closed loop.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Open-loop rate, invoices/s (default: 25 %, 50 % and 75 % of the closed-loop maximum).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds per open-loop phase.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    phase_seconds: u32,
    /// Message suite: gm (SM2/SM3/SM4) or intl (P-256/SHA-256/AES).
    #[arg(long, default_value = "gm", value_parser = parse_suite)]
    suite: Suite,
    /// Issuing mode: sync (platform-hosted devices, the ERP waits for the invoice) or async
    /// (the enterprise-hosted demo enterprise: orders queue at cloud, its agent issues them;
    /// the run ends when cloud has every invoice accepted by tax; no open loop).
    #[arg(long, default_value = "sync")]
    mode: String,
    /// Orders per ERP request: 1 sends each alone, 2 to 100 send them together through
    /// `POST /v1/invoices/batch` (each still individually numbered, signed and uploaded).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    batch: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Every role's database on this PostgreSQL server (`postgres://USER@HOST:PORT`): new
    /// databases fapiao_bench_ID_ROLE for the run, dropped after it. The ratio then counts
    /// the whole machine's CPU (the server's too).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Cloud and platform as this many `fapiao serve` processes each, behind nginx in stream
    /// mode (the shipped config) on the ports the configs name; needs --postgres. The CPU
    /// counted is the whole machine's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    replicas: u32,
}

/// Which role's database a maintenance command works on.
#[derive(Debug, Args)]
struct RoleTarget {
    /// cloud, platform, tax or agent.
    #[arg(long)]
    role: String,
    /// The role's config (default: `<data>/<role>.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of `fapiao up`.
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
}

impl RoleTarget {
    fn config(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| self.data.join(format!("{}.toml", self.role)))
    }
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Queue depths (to issue, to upload, to report, to acknowledge), the oldest pending
    /// work's age, numbers and quota left — read from the agent's database (works while it
    /// runs, and while it is stopped).
    Status {
        /// The agent's config (default: `<data>/agent.toml`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory of `fapiao up`.
        #[arg(long, default_value = "fapiao-data")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Export expired rows to JSON lines under `--export` (synced to disk), then delete them;
    /// cut the audit chain at the newest signed head older than the invoice retention.
    /// The periods come from the `[retention]` table of the role's config.
    Run {
        #[command(flatten)]
        target: RoleTarget,
        /// Where the exports go (`<role>.<table>.jsonl`, appended).
        #[arg(long)]
        export: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Creates the role's database if missing (PostgreSQL: on the server its URL names) and
    /// applies the migrations it lacks, under a lock (replicas and a migration job may run it
    /// at once). Refuses a database migrated by a newer build. `serve` migrates too; run this
    /// first to migrate before replicas start (a Kubernetes Job, a deploy step).
    Migrate {
        #[command(flatten)]
        target: RoleTarget,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new data key active and re-seal every sealed value under it, a batch per
    /// transaction, while the role keeps running. Safe to interrupt and run again.
    Rotate {
        #[command(flatten)]
        target: RoleTarget,
        /// Values re-sealed per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
    },
    /// The active data key and how many values each key seals, per column.
    Status {
        #[command(flatten)]
        target: RoleTarget,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk a role's hash-chained audit log and check every signed head (its record, its
    /// signature and signer when it signed, its link to the head before) and the copies of
    /// heads in witness files; exit status 1 and the first broken, edited, reordered or
    /// deleted record or head when it does not verify.
    Verify {
        #[command(flatten)]
        target: RoleTarget,
        /// A witness file of signed heads (repeat for each replica's); default: the role's
        /// `audit_witness_file`, when it exists.
        #[arg(long)]
        witness: Vec<PathBuf>,
    },
}

/// Arguments of `fapiao verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The invoice: its XML (dzfp_NUMBER.xml), its PDF or its OFD.
    file: PathBuf,
    /// A CA certificate (PEM) the device's certificate must chain to; repeat for several.
    /// Default: the CAs of the --data directory.
    #[arg(long)]
    root: Vec<PathBuf>,
    /// A CRL (PEM) of that CA; repeat for several. Default with --data: its CRLs.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// Tax's receipt: the invoice JSON of the ERP API (`GET /v1/invoices/{number}`), or the
    /// receipt object alone.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// Data directory of `fapiao up`, for its CAs.
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
}

/// Arguments of `fapiao up`.
#[derive(Debug, Args)]
struct UpArgs {
    /// Data directory (PKI, configs, databases).
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
    /// Message suite of the roles' envelopes: gm (SM2/SM3/SM4) or intl (P-256/SHA-256/AES).
    #[arg(long, default_value = "gm", value_parser = parse_suite)]
    suite: Suite,
    /// Cloud port (first run; later runs use the written configs).
    #[arg(long, default_value_t = 8443)]
    cloud_port: u16,
    /// Cloud admin port (health, metrics).
    #[arg(long, default_value_t = 9443)]
    cloud_admin_port: u16,
    /// Platform port.
    #[arg(long, default_value_t = 8444)]
    platform_port: u16,
    /// Platform admin port.
    #[arg(long, default_value_t = 9444)]
    admin_port: u16,
    /// Tax port.
    #[arg(long, default_value_t = 8445)]
    tax_port: u16,
    /// Tax admin port (health, metrics).
    #[arg(long, default_value_t = 9445)]
    tax_admin_port: u16,
    /// Also run the demo enterprise-hosted enterprise's agent (the async flow): its orders
    /// wait at cloud until the agent pulls, issues, uploads and reports them.
    #[arg(long)]
    enterprise_hosted: bool,
    /// Keep every role's database on this PostgreSQL server instead of SQLite files:
    /// `postgres://USER[:PASSWORD]@HOST:PORT[/PREFIX]`. The databases are fapiao_cloud,
    /// fapiao_platform, fapiao_tax (and fapiao_agent) — PREFIX_… when given —, created if
    /// missing; the configs written name them, so `serve <role> --config …` twice is two
    /// replicas of one role.
    #[arg(long, env = "FAPIAO_POSTGRES", value_name = "URL")]
    postgres: Option<String>,
}

/// Where the ERP commands send to.
#[derive(Debug, Args)]
struct ErpTarget {
    /// Data directory of `fapiao up` (cloud URL, trust, ERP credentials).
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
    /// Act as this enterprise (taxpayer id; default: the order's seller or the invoice's owner).
    #[arg(long)]
    enterprise: Option<String>,
}

#[derive(Debug, Args)]
struct AdminTarget {
    /// Data directory of `fapiao up` (admin URL and operator certificate).
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PlatformCommand {
    /// List the registered enterprises.
    Enterprises {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Register an enterprise (JSON file with taxpayer_id, name, cloud, status, hosting,
    /// allowed_types, invoice_limit, monthly_quota, and optionally seller: {address, phone,
    /// bank_name, bank_account}, which its invoices then carry).
    AddEnterprise {
        /// The enterprise, as JSON.
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Change an enterprise: status, limit, quota, allowed types, registered seller particulars.
    SetEnterprise {
        /// Taxpayer id.
        taxpayer_id: String,
        /// active or suspended.
        #[arg(long)]
        status: Option<String>,
        /// Per-invoice limit (价税合计).
        #[arg(long)]
        invoice_limit: Option<String>,
        /// Monthly credit quota.
        #[arg(long)]
        monthly_quota: Option<String>,
        /// Allowed types, comma-separated: special,ordinary.
        #[arg(long)]
        allowed_types: Option<String>,
        /// Registered address its invoices carry ("" removes it).
        #[arg(long)]
        address: Option<String>,
        /// Registered phone ("" removes it).
        #[arg(long)]
        phone: Option<String>,
        /// Registered bank ("" removes it).
        #[arg(long)]
        bank_name: Option<String>,
        /// Registered bank account ("" removes it).
        #[arg(long)]
        bank_account: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List the registered cloud platforms.
    Clouds {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Register a cloud platform (or change its URL).
    AddCloud {
        /// Its identity, `cloud:<name>` as in its certificates.
        identity: String,
        /// Its base URL (status notices go there).
        url: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List outbox entries (uploads to tax, notices to clouds): failed ones by default.
    Outbox {
        /// pending, failed or done.
        #[arg(long, default_value = "failed")]
        state: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Put a failed outbox entry back in the queue.
    Retry {
        /// The entry's id.
        id: i64,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Arguments of `fapiao preview`.
#[derive(Debug, Args)]
struct PreviewArgs {
    /// The order, as JSON (see examples/orders/).
    order: PathBuf,
    /// Tax classification catalog to use instead of the bundled official table (v32.0)
    /// (CSV: code,name,short_name,rate,description; or code,short_name,default_rate,name).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Print the computed invoice (or the findings) as JSON instead of the readable layout.
    #[arg(long)]
    json: bool,
    /// Give the invoice this 20-digit number (a specimen: it is not issued or signed); with
    /// --json the output is an invoice file `fapiao render` reads.
    #[arg(long)]
    number: Option<String>,
    /// Issue time for --number, `yyyy-MM-dd HH:mm:ss` China time (default: now).
    #[arg(long)]
    issued_at: Option<String>,
}

/// Arguments of `fapiao render`.
#[derive(Debug, Args)]
struct RenderArgs {
    /// An invoice file (JSON, as `fapiao preview --number N --json` writes it), or the 20-digit
    /// number of an issued invoice: its files are then downloaded from the running system.
    invoice: PathBuf,
    /// Data directory of `fapiao up`, for a number.
    #[arg(long, default_value = "fapiao-data")]
    data: PathBuf,
    /// Write the PDF layout file here.
    #[arg(long)]
    pdf: Option<PathBuf>,
    /// Write the 数电票 XML here.
    #[arg(long)]
    xml: Option<PathBuf>,
    /// Write the OFD layout file here, signed by the issuing device: --device for an invoice
    /// file; for a number, the API's (signed at platform by the hosted device that issued it;
    /// an invoice an enterprise's own device issued is signed where that device is).
    #[arg(long)]
    ofd: Option<PathBuf>,
    /// For a number: write the PDF, OFD and XML together into this directory as the national
    /// platform names them, `dzfp_<number>_<buyer>_<yyyyMMddHHmmss>.zip`.
    #[arg(long, value_name = "DIR")]
    zip: Option<PathBuf>,
    /// Sign the XML (and the OFD) as this issuing device: DEVICE.crt.pem and DEVICE.key.pem (SM2 signing
    /// certificate and key; the key's passphrase from --key-passphrase-file or
    /// $FAPIAO_KEY_PASSPHRASE).
    #[arg(long)]
    device: Option<PathBuf>,
    /// File holding the device key's passphrase.
    #[arg(long, value_name = "FILE")]
    key_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PkiDir {
    /// The PKI directory.
    #[arg(long, default_value = "pki")]
    dir: PathBuf,
    /// The suite: gm (SM2/SM3/SM4) or intl (P-256/SHA-256/AES).
    #[arg(long, default_value = "gm", value_parser = parse_suite)]
    suite: Suite,
}

#[derive(Debug, Args)]
struct CaPassphrase {
    /// File holding the CA key's passphrase (else $FAPIAO_CA_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    ca_passphrase_file: Option<PathBuf>,
}

/// What to issue.
#[derive(Debug, Args)]
struct IssueArgs {
    /// File holding the new key's passphrase (else $FAPIAO_KEY_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// Role of the holder: cloud, platform, tax, device, agent.
    #[arg(long)]
    role: String,
    /// Name of the holder (CN).
    #[arg(long)]
    name: String,
    /// The enterprise's taxpayer id (devices and agents).
    #[arg(long)]
    taxpayer_id: Option<String>,
    /// signing, encryption, tls-server or tls-client.
    #[arg(long)]
    profile: String,
    /// DNS name for tls-server (repeatable).
    #[arg(long)]
    dns: Vec<String>,
    /// IP address for tls-server (repeatable).
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Output prefix.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a root CA for a suite (and its first, empty CRL).
    Init {
        #[command(flatten)]
        dir: PkiDir,
        #[command(flatten)]
        pass: CaPassphrase,
        /// The CA's name (CN).
        #[arg(long, default_value = "Fapiao Root CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a key pair and a certificate: OUT.crt.pem and OUT.key.pem (encrypted, 0600).
    Issue {
        #[command(flatten)]
        dir: PkiDir,
        #[command(flatten)]
        pass: CaPassphrase,
        #[command(flatten)]
        args: IssueArgs,
    },
    /// Mark a certificate revoked: in a `pki init` directory (publish with `pki crl`), or with
    /// --data in the data directory of `fapiao up`, whose CRLs are published at once and kept
    /// across restarts; running roles apply them within `crl_reload_seconds`.
    Revoke {
        #[command(flatten)]
        dir: PkiDir,
        /// The data directory of `fapiao up` (its development CA) instead of a PKI directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Serial number in hex (as `pki show` prints it).
        #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
        serial: Option<String>,
        /// Or the certificate file.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Sign and publish the current cumulative CRL (DIR/SUITE/crl.pem).
    Crl {
        #[command(flatten)]
        dir: PkiDir,
        #[command(flatten)]
        pass: CaPassphrase,
        /// Days until the next update is due.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Print a certificate or CRL human-readably.
    Show {
        /// A PEM certificate or CRL.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct PartyArgs {
    /// The suite: gm or intl.
    #[arg(long, default_value = "gm", value_parser = parse_suite)]
    suite: Suite,
    /// Prefix of our dual certificates: PARTY.sign.{crt,key}.pem and PARTY.enc.{crt,key}.pem.
    #[arg(long)]
    party: PathBuf,
    /// File holding our keys' passphrase (else $FAPIAO_KEY_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// Input file (else stdin).
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// Output file (else stdout).
    #[arg(long = "out")]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum EnvelopeCommand {
    /// Sign a payload as our party and encrypt it to a recipient.
    Seal {
        #[command(flatten)]
        party: PartyArgs,
        /// The recipient's encryption certificate.
        #[arg(long)]
        to: PathBuf,
        /// Message type, e.g. order.issue.
        #[arg(long = "type")]
        message_type: String,
        /// Message id (default: random).
        #[arg(long)]
        id: Option<String>,
        /// Protocol version.
        #[arg(long, default_value_t = 1)]
        protocol_version: u16,
    },
    /// Decrypt and verify an envelope addressed to our party; the payload goes to --out.
    ///
    /// Exit status 1 when the envelope is rejected, with the reason on stderr.
    Open {
        #[command(flatten)]
        party: PartyArgs,
        /// Trusted root certificates (PEM, repeatable).
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
        /// CRLs (PEM, repeatable); one current CRL per issuer is required.
        #[arg(long)]
        crl: Vec<PathBuf>,
        /// Freshness window in seconds, each side of now.
        #[arg(long, default_value_t = 300)]
        window_seconds: i64,
        /// Highest protocol version accepted.
        #[arg(long, default_value_t = 1)]
        max_version: u16,
    },
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    Suite::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let now = clock::now();
    match command {
        Command::Preview(args) => preview::run(&preview::Plan::from_args(args, now)?),
        Command::Render(args) => {
            let text = args.invoice.to_string_lossy();
            if !args.invoice.exists()
                && text.len() == 20
                && text.bytes().all(|b| b.is_ascii_digit())
            {
                if [&args.pdf, &args.xml, &args.ofd, &args.zip]
                    .iter()
                    .all(|a| a.is_none())
                {
                    anyhow::bail!("give --pdf, --xml, --ofd and/or --zip");
                }
                services::download(
                    &args.data,
                    &text,
                    services::Downloads {
                        pdf: args.pdf.as_ref(),
                        xml: args.xml.as_ref(),
                        ofd: args.ofd.as_ref(),
                        zip: args.zip.as_ref(),
                    },
                )
            } else {
                if args.zip.is_some() {
                    anyhow::bail!("--zip: for the number of an issued invoice");
                }
                render::run(&render::Plan::from_args(args, &key_pass)?, now)
            }
        }
        Command::Verify(args) => verify::run(&args),
        Command::Pki(cmd) => run_pki(cmd, now),
        Command::Envelope(cmd) => run_envelope(cmd, now),
        Command::Bench(a) => {
            let enterprise_hosted = match a.mode.as_str() {
                "sync" => false,
                "async" => true,
                other => anyhow::bail!("--mode {other}: sync or async"),
            };
            if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate: a positive number of invoices per second");
            }
            let opts = bench::BenchOptions {
                count: a.count as usize,
                concurrency: a.concurrency as usize,
                rate: a.rate,
                phase: std::time::Duration::from_secs(u64::from(a.phase_seconds)),
                suite: a.suite,
                enterprise_hosted,
                batch: a.batch as usize,
                postgres: a.postgres.clone(),
                replicas: a.replicas as usize,
            };
            bench::main(&opts, a.json.as_deref(), now).map(|()| ExitCode::SUCCESS)
        }
        Command::Up(a) => services::up(
            &a.data,
            a.suite,
            fapiao_system::Ports {
                cloud: a.cloud_port,
                cloud_admin: a.cloud_admin_port,
                platform: a.platform_port,
                platform_admin: a.admin_port,
                tax: a.tax_port,
                tax_admin: a.tax_admin_port,
            },
            a.enterprise_hosted,
            a.postgres.as_deref(),
            now,
        ),
        Command::Agent(AgentCommand::Status { config, data, json }) => {
            services::agent_status(&config.unwrap_or_else(|| data.join("agent.toml")), json)
        }
        Command::Serve { role, config } => services::serve(&role, &config),
        Command::Reconcile {
            role,
            config,
            data,
            from,
            days,
            repair,
            json,
        } => services::reconcile(
            &role,
            &config.unwrap_or_else(|| data.join(format!("{role}.toml"))),
            from,
            days,
            repair,
            json,
        ),
        Command::Issue {
            order,
            target,
            json,
        } => services::issue(&target.data, &order, target.enterprise, json),
        Command::Red {
            number,
            reason,
            lines,
            buyer_confirmation,
            order_id,
            drawer,
            target,
            json,
        } => services::red(
            &target.data,
            &number,
            &reason,
            &lines,
            services::RedOptions {
                buyer_confirmation,
                order_id,
                drawer,
            },
            target.enterprise,
            json,
        ),
        Command::Platform(cmd) => run_platform(cmd),
        Command::Audit(AuditCommand::Verify { target, witness }) => {
            services::audit_verify(&target.role, &target.config(), &witness)
        }
        Command::Keys(KeysCommand::Rotate { target, batch }) => {
            services::keys(&target.role, &target.config(), Some(batch))
        }
        Command::Keys(KeysCommand::Status { target }) => {
            services::keys(&target.role, &target.config(), None)
        }
        Command::Retention(RetentionCommand::Run { target, export }) => {
            services::retention(&target.role, &target.config(), &export)
        }
        Command::Db(DbCommand::Migrate { target }) => {
            services::db_migrate(&target.role, &target.config())
        }
    }
}

fn run_platform(cmd: PlatformCommand) -> anyhow::Result<ExitCode> {
    use http::Method;
    match cmd {
        PlatformCommand::Enterprises { target } => {
            services::admin(&target.data, Method::GET, "/admin/enterprises", None)
        }
        PlatformCommand::AddEnterprise { file, target } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let body: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            services::admin(&target.data, Method::POST, "/admin/enterprises", Some(body))
        }
        PlatformCommand::SetEnterprise {
            taxpayer_id,
            status,
            invoice_limit,
            monthly_quota,
            allowed_types,
            address,
            phone,
            bank_name,
            bank_account,
            target,
        } => {
            let mut body = serde_json::Map::new();
            let mut seller = serde_json::Map::new();
            for (k, v) in [
                ("address", address),
                ("phone", phone),
                ("bank_name", bank_name),
                ("bank_account", bank_account),
            ] {
                if let Some(v) = v {
                    seller.insert(k.into(), v.into());
                }
            }
            if !seller.is_empty() {
                body.insert("seller".into(), seller.into());
            }
            if let Some(s) = status {
                body.insert("status".into(), s.into());
            }
            if let Some(l) = invoice_limit {
                body.insert("invoice_limit".into(), l.into());
            }
            if let Some(q) = monthly_quota {
                body.insert("monthly_quota".into(), q.into());
            }
            if let Some(t) = allowed_types {
                body.insert(
                    "allowed_types".into(),
                    t.split(',').map(str::trim).collect::<Vec<_>>().into(),
                );
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --status, --invoice-limit, --monthly-quota, --allowed-types, --address, --phone, --bank-name or --bank-account"
                );
            }
            services::admin(
                &target.data,
                Method::PATCH,
                &format!("/admin/enterprises/{taxpayer_id}"),
                Some(body.into()),
            )
        }
        PlatformCommand::Clouds { target } => {
            services::admin(&target.data, Method::GET, "/admin/clouds", None)
        }
        PlatformCommand::AddCloud {
            identity,
            url,
            target,
        } => services::admin(
            &target.data,
            Method::POST,
            "/admin/clouds",
            Some(serde_json::json!({ "identity": identity, "url": url })),
        ),
        PlatformCommand::Outbox { state, target } => services::admin(
            &target.data,
            Method::GET,
            &format!("/admin/outbox?state={state}"),
            None,
        ),
        PlatformCommand::Retry { id, target } => services::admin(
            &target.data,
            Method::POST,
            &format!("/admin/outbox/{id}/retry"),
            None,
        ),
    }
}

fn ca_pass(p: CaPassphrase) -> pki::Passphrase {
    pki::Passphrase {
        file: p.ca_passphrase_file,
        env: pki::CA_PASSPHRASE_ENV,
    }
}

fn key_pass(file: Option<PathBuf>) -> pki::Passphrase {
    pki::Passphrase {
        file,
        env: pki::KEY_PASSPHRASE_ENV,
    }
}

fn run_pki(cmd: PkiCommand, now: time::OffsetDateTime) -> anyhow::Result<ExitCode> {
    match cmd {
        PkiCommand::Init {
            dir,
            pass,
            name,
            days,
        } => {
            let cert = pki::init(&dir.dir, dir.suite, &name, days, &ca_pass(pass), now)?;
            eprintln!(
                "created the {} root CA in {}/{}",
                dir.suite,
                dir.dir.display(),
                dir.suite
            );
            print!("{}", cert.describe());
        }
        PkiCommand::Issue { dir, pass, args } => {
            let key_passphrase = key_pass(args.key_passphrase_file.clone());
            let plan = pki::IssuePlan::from_args(dir.suite, args)?;
            let cert = pki::issue(&dir.dir, &plan, &ca_pass(pass), &key_passphrase, now)?;
            eprintln!("wrote {0}.crt.pem and {0}.key.pem", plan.out.display());
            print!("{}", cert.describe());
        }
        PkiCommand::Revoke {
            dir,
            data,
            serial,
            cert,
        } => {
            let serial = match (serial, cert) {
                (Some(s), _) => s,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                    fapiao_crypto::Certificate::from_pem(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                        .serial_hex()
                }
                (None, None) => anyhow::bail!("give --serial or --cert"),
            };
            if let Some(data) = data {
                let layout = fapiao_system::Layout::at(&data);
                anyhow::ensure!(
                    layout.exists(),
                    "{} is not a data directory of `fapiao up`",
                    data.display()
                );
                let changed = layout.revoke_serial(&serial, now)?;
                eprintln!(
                    "{serial} {}; CRLs published in {}/ca: running roles refuse it within \
                     their crl_reload_seconds (default 60), or at once after \
                     POST /admin/crls/reload on their admin ports",
                    if changed {
                        "revoked"
                    } else {
                        "was already revoked"
                    },
                    data.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let changed = pki::revoke(&dir.dir, dir.suite, &serial, now)?;
            eprintln!(
                "{serial} {}; run `fapiao pki crl --suite {}` to publish",
                if changed {
                    "revoked"
                } else {
                    "was already revoked"
                },
                dir.suite
            );
        }
        PkiCommand::Crl { dir, pass, days } => {
            let crl = pki::crl(&dir.dir, dir.suite, &ca_pass(pass), days, now)?;
            eprintln!(
                "published {}/{}/crl.pem ({} revoked)",
                dir.dir.display(),
                dir.suite,
                crl.revoked_serials().len()
            );
        }
        PkiCommand::Show { file } => print!("{}", pki::show(&file)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_envelope(cmd: EnvelopeCommand, now: time::OffsetDateTime) -> anyhow::Result<ExitCode> {
    match cmd {
        EnvelopeCommand::Seal {
            party,
            to,
            message_type,
            id,
            protocol_version,
        } => {
            let recipient = fapiao_crypto::Certificate::from_pem(
                &std::fs::read_to_string(&to)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", to.display()))?,
            )?;
            let plan = envelope::SealPlan {
                party: envelope::load_party(
                    &party.party,
                    party.suite,
                    &key_pass(party.key_passphrase_file),
                )?,
                recipient,
                message_type,
                message_id: id,
                protocol_version,
                input: party.input,
                output: party.output,
            };
            envelope::run_seal(&plan, now)
        }
        EnvelopeCommand::Open {
            party,
            trust,
            crl,
            window_seconds,
            max_version,
        } => {
            let plan = envelope::OpenPlan {
                party: envelope::load_party(
                    &party.party,
                    party.suite,
                    &key_pass(party.key_passphrase_file),
                )?,
                trust: envelope::load_trust(&trust, &crl)?,
                window: time::Duration::seconds(window_seconds),
                max_version,
                input: party.input,
                output: party.output,
            };
            envelope::run_open(&plan, now)
        }
    }
}
