"""Schemathesis hooks for the Fapiao ERP API: a request whose timestamp, nonce and signature
headers hold the placeholder `sign` (schemathesis.toml sends them, with the key id, on every
request) is signed at
the moment it is sent, over the exact bytes on the wire — method, path with its query, body —
per docs/openapi.json. A request schemathesis stripped of its authentication headers, or gave
other values, goes as it is: the server must refuse it.

    cd examples/clients/schemathesis
    FAPIAO_ERP_KEY=ak_… FAPIAO_ERP_SECRET=sk_… FAPIAO_CA=…/ca/intl/ca.crt.pem \
        schemathesis run ../../../docs/openapi.json --url https://127.0.0.1:8443
"""

import hashlib
import hmac
import os
import secrets
import time

import requests.adapters

SECRET = os.environ["FAPIAO_ERP_SECRET"].encode()

_send = requests.adapters.HTTPAdapter.send


def _signed_send(self, request, *args, **kwargs):
    placeholders = ("X-Fapiao-Timestamp", "X-Fapiao-Nonce", "X-Fapiao-Signature")
    if request.headers.get("X-Fapiao-Key") and all(
        request.headers.get(h) == "sign" for h in placeholders
    ):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        text = "\n".join(
            [
                "FAPIAO-HMAC-SHA256",
                request.method.upper(),
                request.path_url,
                timestamp,
                nonce,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        request.headers["X-Fapiao-Timestamp"] = timestamp
        request.headers["X-Fapiao-Nonce"] = nonce
        request.headers["X-Fapiao-Signature"] = hmac.new(
            SECRET, text.encode(), hashlib.sha256
        ).hexdigest()
    return _send(self, request, *args, **kwargs)


requests.adapters.HTTPAdapter.send = _signed_send
