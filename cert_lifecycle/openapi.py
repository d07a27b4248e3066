"""The partner API's OpenAPI 3 document: cert_lifecycle/partner_api.openapi.json, kept in the repo (it is deployed
with the package, docs/ is not) and served by GET /api/partner-api/openapi.json. Read once per process.

It describes exactly the partner API: every HTTP function of the certificate lifecycle (cert_lifecycle/functions.py)
below the admin level (admin functions, the revocation, are the operator's). tests/unit/test_partner_openapi.py
derives those routes from function_app.app as the host indexes it and compares them with the document's paths."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DOCUMENT = Path(__file__).with_name("partner_api.openapi.json")


@cache
def document_bytes() -> bytes:
    return DOCUMENT.read_bytes()


def document() -> dict:
    return json.loads(document_bytes())

