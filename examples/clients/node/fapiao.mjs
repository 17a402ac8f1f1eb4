#!/usr/bin/env node
// A small client of the Fapiao ERP API, written from docs/openapi.json and docs/webhooks.md.
// Node's standard library only (https, crypto). Signs every request, issues an invoice, reads
// it back, lists, downloads its PDF and XML, registers a webhook endpoint, and verifies a
// webhook signature.
//
//   node fapiao.mjs --url https://127.0.0.1:8443 --ca fapiao-data/ca/intl/ca.crt.pem \
//     --credentials fapiao-data/erp-credentials.json --enterprise 91310115MA1FP0001X \
//     --order examples/orders/basic.json

import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import assert from "node:assert/strict";

export class ApiError extends Error {
  constructor(status, body) {
    super(`HTTP ${status} ${body.code}: ${body.message}`);
    this.status = status;
    this.body = body;
  }
}

export class FapiaoClient {
  constructor(url, keyId, secret, caFile) {
    this.url = new URL(url);
    if (this.url.protocol !== "https:") throw new Error("the ERP API is https only");
    this.keyId = keyId;
    this.secret = secret;
    // The cloud's TLS certificate chains to the operator's CA (for `up`:
    // fapiao-data/ca/intl/ca.crt.pem); the ERP trusts exactly that anchor.
    this.ca = readFileSync(caFile);
  }

  // Lines joined by "\n", no trailing newline: the scheme, the method in upper case, the path
  // with its query exactly as sent, the timestamp, the nonce, the hex SHA-256 of the body.
  static stringToSign(method, pathAndQuery, timestamp, nonce, body) {
    return [
      "FAPIAO-HMAC-SHA256",
      method.toUpperCase(),
      pathAndQuery,
      String(timestamp),
      nonce,
      createHash("sha256").update(body).digest("hex"),
    ].join("\n");
  }

  request(method, pathAndQuery, body = Buffer.alloc(0)) {
    const timestamp = Math.floor(Date.now() / 1000);
    const nonce = randomBytes(16).toString("hex");
    const signature = createHmac("sha256", this.secret)
      .update(FapiaoClient.stringToSign(method, pathAndQuery, timestamp, nonce, body))
      .digest("hex");
    const headers = {
      "X-Fapiao-Key": this.keyId,
      "X-Fapiao-Timestamp": String(timestamp),
      "X-Fapiao-Nonce": nonce,
      "X-Fapiao-Signature": signature,
    };
    if (body.length) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = String(body.length);
    }
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: this.url.hostname,
          port: this.url.port || 443,
          method,
          path: pathAndQuery,
          headers,
          ca: this.ca,
          timeout: 30000,
        },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  async json(method, pathAndQuery, payload) {
    const body = payload === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(payload));
    const r = await this.request(method, pathAndQuery, body);
    const value = r.body.length ? JSON.parse(r.body.toString("utf8")) : null;
    if (r.status < 200 || r.status >= 300) throw new ApiError(r.status, value ?? {});
    return { status: r.status, value };
  }

  issue(order) {
    return this.json("POST", "/v1/invoices", order);
  }

  async invoice(number) {
    return (await this.json("GET", `/v1/invoices/${encodeURIComponent(number)}`)).value;
  }

  async list(filters = {}) {
    const q = new URLSearchParams(
      Object.entries(filters).filter(([, v]) => v !== undefined && v !== null),
    ).toString();
    return (await this.json("GET", "/v1/invoices" + (q ? `?${q}` : ""))).value;
  }

  async download(number, kind) {
    const r = await this.request("GET", `/v1/invoices/${number}/${kind}`);
    if (r.status !== 200) throw new ApiError(r.status, JSON.parse(r.body.toString("utf8")));
    return r.body;
  }

  async registerEndpoint(url, events) {
    return (await this.json("POST", "/v1/webhook-endpoints", events ? { url, events } : { url }))
      .value;
  }
}

// Whether a delivery is genuine: hex HMAC-SHA256 keyed with the endpoint's secret over
// `<timestamp>.<raw body>` (the body as received, before any JSON parsing).
export function verifyWebhook(secret, timestamp, rawBody, signature) {
  const want = createHmac("sha256", secret)
    .update(Buffer.concat([Buffer.from(`${timestamp}.`), rawBody]))
    .digest();
  const got = Buffer.from(signature, "hex");
  return got.length === want.length && timingSafeEqual(got, want);
}

// The worked example of docs/webhooks.md.
function workedExample(path) {
  const text = readFileSync(path, "utf8");
  const value = (label) =>
    text.split("\n").find((l) => l.startsWith(label)).slice(label.length).trim().replaceAll("`", "");
  const body = text.split("Body (raw bytes, one line):")[1].split("```json\n")[1].split("\n")[0];
  return [value("secret:"), value("X-Fapiao-Timestamp:"), Buffer.from(body), value("X-Fapiao-Signature:")];
}

function args() {
  const a = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) a[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const k of ["url", "ca", "credentials", "enterprise", "order"]) {
    if (!a[k]) throw new Error(`--${k} is required`);
  }
  a["webhooks-doc"] ??= "docs/webhooks.md";
  return a;
}

async function main() {
  const a = args();
  const creds = JSON.parse(readFileSync(a.credentials, "utf8"))[a.enterprise];
  const client = new FapiaoClient(a.url, creds.key_id, creds.secret, a.ca);
  const order = JSON.parse(readFileSync(a.order, "utf8"));
  order.order_id = "NODE-" + randomBytes(6).toString("hex");
  const issued = await client.issue(order);
  assert.equal(issued.status, 201);
  const number = issued.value.number;
  console.log(`issued ${number} total ${issued.value.total} at ${issued.value.issued_at}`);
  const again = await client.issue(order);
  assert.equal(again.status, 200, "the same order is the same invoice");
  assert.equal(again.value.number, number);
  assert.equal((await client.invoice(number)).order_id, order.order_id);
  const listed = await client.list({ limit: 5 });
  assert.ok(listed.items.some((i) => i.number === number));
  const pdf = await client.download(number, "pdf");
  const xml = await client.download(number, "xml");
  assert.ok(pdf.subarray(0, 5).toString() === "%PDF-" && xml.toString().startsWith("<"));
  console.log(`downloaded PDF (${pdf.length} bytes) and XML (${xml.length} bytes)`);
  await assert.rejects(client.issue({ order_id: order.order_id, items: [] }), (e) => {
    assert.equal(e.status, 409);
    assert.equal(e.body.code, "order_conflict");
    assert.ok(e.body.request_id);
    return true;
  });
  const endpoint = await client.registerEndpoint("https://erp.example.com/fapiao/hooks", [
    "invoice.issued",
  ]);
  assert.ok(endpoint.secret.startsWith("whsec_"));
  console.log(`registered webhook endpoint ${endpoint.id}`);
  await client.json("DELETE", `/v1/webhook-endpoints/${endpoint.id}`);
  const [secret, ts, body, signature] = workedExample(a["webhooks-doc"]);
  assert.ok(verifyWebhook(secret, ts, body, signature));
  assert.ok(!verifyWebhook(secret, ts, Buffer.concat([body, Buffer.from(" ")]), signature));
  console.log("webhook signature example verified");
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
