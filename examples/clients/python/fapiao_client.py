#!/usr/bin/env python3
"""A small client of the Fapiao ERP API, written from docs/openapi.json and docs/webhooks.md.

Standard library only. Signs every request (X-Fapiao-Key, -Timestamp, -Nonce, -Signature),
issues an invoice, reads it back, lists, downloads its PDF and XML, registers a webhook
endpoint, and verifies a webhook signature.

    python3 fapiao_client.py --url https://127.0.0.1:8443 \
        --ca fapiao-data/ca/intl/ca.crt.pem \
        --credentials fapiao-data/erp-credentials.json \
        --enterprise 91310115MA1FP0001X --order examples/orders/basic.json
"""

import argparse
import hashlib
import hmac
import http.client
import json
import secrets
import ssl
import sys
import time
import urllib.parse


class ApiError(Exception):
    """A non-2xx answer: the documented JSON error."""

    def __init__(self, status, body):
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status} {body.get('code')}: {body.get('message')}")


class FapiaoClient:
    def __init__(self, url, key_id, secret, ca_file):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https":
            raise ValueError("the ERP API is https only")
        self.host = parsed.hostname
        self.port = parsed.port or 443
        self.key_id = key_id
        self.secret = secret.encode()
        # The cloud's TLS certificate chains to the platform operator's CA (for `up`:
        # fapiao-data/ca/intl/ca.crt.pem); the ERP trusts exactly that anchor.
        self.tls = ssl.create_default_context(cafile=ca_file)

    @staticmethod
    def string_to_sign(method, path_and_query, timestamp, nonce, body):
        """Lines joined by \\n, no trailing newline: the scheme, the method in upper case, the
        path with its query exactly as sent, the timestamp, the nonce, and the hex SHA-256 of
        the body (of nothing for no body)."""
        return "\n".join(
            [
                "FAPIAO-HMAC-SHA256",
                method.upper(),
                path_and_query,
                str(timestamp),
                nonce,
                hashlib.sha256(body).hexdigest(),
            ]
        )

    def request(self, method, path_and_query, body=b""):
        timestamp = int(time.time())
        nonce = secrets.token_hex(16)
        to_sign = self.string_to_sign(method, path_and_query, timestamp, nonce, body)
        signature = hmac.new(self.secret, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "X-Fapiao-Key": self.key_id,
            "X-Fapiao-Timestamp": str(timestamp),
            "X-Fapiao-Nonce": nonce,
            "X-Fapiao-Signature": signature,
        }
        if body:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=30)
        try:
            conn.request(method, path_and_query, body=body or None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        finally:
            conn.close()

    def json(self, method, path_and_query, payload=None):
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        status, headers, data = self.request(method, path_and_query, body)
        value = json.loads(data) if data else None
        if not 200 <= status < 300:
            raise ApiError(status, value or {})
        return status, value

    def issue(self, order):
        """Issues an order; the same order_id again answers the same invoice (200)."""
        return self.json("POST", "/v1/invoices", order)

    def invoice(self, number):
        return self.json("GET", f"/v1/invoices/{urllib.parse.quote(number)}")[1]

    def list(self, **filters):
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        return self.json("GET", "/v1/invoices" + (f"?{query}" if query else ""))[1]

    def download(self, number, kind):
        status, headers, data = self.request("GET", f"/v1/invoices/{number}/{kind}")
        if status != 200:
            raise ApiError(status, json.loads(data))
        return data

    def register_endpoint(self, url, events=None):
        body = {"url": url}
        if events is not None:
            body["events"] = events
        return self.json("POST", "/v1/webhook-endpoints", body)[1]


def verify_webhook(secret, timestamp, body, signature, tolerance=300, now=None):
    """Whether a delivery is genuine: hex HMAC-SHA256 keyed with the endpoint's secret over
    `<timestamp>.<raw body>`, and the timestamp within `tolerance` seconds of now."""
    if now is not None and abs(now - int(timestamp)) > tolerance:
        return False
    want = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, signature)


def worked_example(path):
    """The worked example of docs/webhooks.md: (secret, timestamp, body, signature)."""
    text = open(path, encoding="utf-8").read()

    def value(label):
        line = next(l for l in text.splitlines() if l.startswith(label))
        return line[len(label):].strip().strip("`")

    body = text.split("Body (raw bytes, one line):")[1].split("```json\n")[1].split("\n")[0]
    return value("secret:"), value("X-Fapiao-Timestamp:"), body.encode(), value("X-Fapiao-Signature:")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--credentials", required=True, help="JSON: {taxpayer_id: {key_id, secret}}")
    p.add_argument("--enterprise", required=True)
    p.add_argument("--order", required=True)
    p.add_argument("--webhooks-doc", default="docs/webhooks.md")
    a = p.parse_args()
    creds = json.load(open(a.credentials))[a.enterprise]
    client = FapiaoClient(a.url, creds["key_id"], creds["secret"], a.ca)

    order = json.load(open(a.order, encoding="utf-8"))
    order["order_id"] = "PY-" + secrets.token_hex(6)
    status, inv = client.issue(order)
    assert status == 201, status
    number = inv["number"]
    print(f"issued {number} total {inv['total']} at {inv['issued_at']}")
    status, again = client.issue(order)
    assert status == 200 and again["number"] == number, "the same order is the same invoice"
    assert client.invoice(number)["order_id"] == order["order_id"]
    listed = client.list(limit=5)
    assert any(i["number"] == number for i in listed["items"]), listed
    pdf = client.download(number, "pdf")
    xml = client.download(number, "xml")
    assert pdf.startswith(b"%PDF-") and b"<" in xml[:10], "layout files"
    print(f"downloaded PDF ({len(pdf)} bytes) and XML ({len(xml)} bytes)")
    try:
        client.issue({"order_id": order["order_id"], "items": []})
        raise AssertionError("a changed order with the same id must conflict")
    except ApiError as e:
        assert e.status == 409 and e.body["code"] == "order_conflict", e.body
        assert e.body["request_id"], e.body
    endpoint = client.register_endpoint("https://erp.example.com/fapiao/hooks", ["invoice.issued"])
    assert endpoint["secret"].startswith("whsec_"), endpoint
    print(f"registered webhook endpoint {endpoint['id']}")
    client.json("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}")
    secret, ts, body, signature = worked_example(a.webhooks_doc)
    assert verify_webhook(secret, ts, body, signature)
    assert not verify_webhook(secret, ts, body + b" ", signature)
    print("webhook signature example verified")
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
