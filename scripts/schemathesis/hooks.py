"""Schemathesis hooks for tokenledger (loaded by scripts/schemathesis.sh via SCHEMATHESIS_HOOKS).

Real fixtures instead of generated credentials: client endpoints get the seeded client's Basic
credentials, bearer endpoints a live access token of the seeded first-party client, both through
schemathesis auth providers (so the generated Authorization values of the vendor document, which
declares Authorization as a plain header parameter, are replaced too). Every request gets a fresh
transactionId unless the case is a negative test of that very header. Known faults of the vendor
document are dropped by `filter_failure`, each with the reason it is not ours; docs/interop.md
lists them.

Environment: TL_URL, TL_INSTITUTION, TL_CLIENT_ID, TL_CLIENT_SECRET (set by the script).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import sys
import time
import urllib.parse
import uuid

import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import negated_parameters

URL = os.environ["TL_URL"].rstrip("/")
INSTITUTION = os.environ["TL_INSTITUTION"]
CLIENT_ID = os.environ["TL_CLIENT_ID"]
CLIENT_SECRET = os.environ["TL_CLIENT_SECRET"]
# Which document this run tests: "vendor" (docs/vendor/candescent-auth-openapi.yaml) or "own".
DOCUMENT = os.environ.get("TL_DOCUMENT", "own")

CLIENT_PATHS = r"^/oauth2/v1/"
BEARER_PATHS = r"^/(v1|auth-code/v1|db-users/v1)/"


def basic_header(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: each part form-urlencoded, then Basic."""
    pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def negated(case, name: str) -> bool:
    """The case deliberately made this header invalid (a negative test): leave it alone."""
    return (name, ParameterLocation.HEADER) in set(negated_parameters(case.meta))


def set_authorization(case, value: str) -> None:
    if negated(case, "Authorization"):
        return
    if case.headers is None:
        case.headers = {}
    for name in [n for n in case.headers if n.lower() == "authorization"]:
        del case.headers[name]
    case.headers["Authorization"] = value


@schemathesis.auth().apply_to(path_regex=CLIENT_PATHS)
class ClientBasicAuth:
    """The seeded client's credentials for the token, revocation and introspection endpoints."""

    def get(self, case, context):
        return basic_header(CLIENT_ID, CLIENT_SECRET)

    def set(self, case, data, context):
        set_authorization(case, data)


@schemathesis.auth(refresh_interval=600).apply_to(path_regex=BEARER_PATHS)
class FirstPartyBearerAuth:
    """A client_credentials access token of the seeded first-party client, for the code
    endpoints and the user lookup (its scopes include institution-users:read)."""

    def get(self, case, context):
        response = requests.post(
            f"{URL}/oauth2/v1/token",
            headers={
                "Authorization": basic_header(CLIENT_ID, CLIENT_SECRET),
                "transactionId": str(uuid.uuid4()),
                "institutionId": INSTITUTION,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            data="grant_type=client_credentials",
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def set(self, case, data, context):
        set_authorization(case, f"Bearer {data}")


@schemathesis.hook
def before_call(context, case, kwargs):
    """A fresh transactionId per request: the token endpoint treats a repeated one as a retry
    (same tokens, or CMN_90011 for another form), which generated UUIDs would hit by chance."""
    if negated(case, "transactionId"):
        return
    if case.headers is None:
        case.headers = {}
    case.headers["transactionId"] = str(uuid.uuid4())




# Refusals that depend on what is registered, not on the request's shape: the schema cannot
# know which institutions, partners, users and scopes exist, so a schema-valid request may
# name ones that do not. Each is still a 400 per SPEC section 6. (Both documents.)
STATE_DEPENDENT = {
    "CMN_90005": "institution or institution_user_id not registered (or not the code's/token's)",
    "CMN_90006": "client not entitled to that grant, institution or partner",
    "CMN_90012": "scope not registered for the client",
    "CMN_90013": "username is not the login id of the user named by institution_user_id",
    "CMN_90020": "the partner named is the caller's own client",
    "CMN_90021": "partner not registered, or without the grant, scopes or redirect URI the flow needs",
}

# The fields each grant needs (SPEC 3.1); the vendor's AccessTokenRequestV2 lists the same.
GRANT_FIELDS = {
    "client_credentials": (),
    "password": ("username", "password"),
    "refresh_token": ("refresh_token",),
    "authorization_code": ("code",),
}

# The form fields SPEC 3 defines for each endpoint (both documents declare these or fewer).
DECLARED_FIELDS = {
    "/oauth2/v1/token": {
        "grant_type", "scopes", "scope", "username", "password", "refresh_token", "code",
        "code_verifier", "redirect_uri",
    },
    "/oauth2/v1/revoke": {"token", "token_type_hint"},
    "/oauth2/v1/introspect": {"token", "token_type_hint"},
    "/client-authorization": {"client_id"},
    "/auth-code": {
        "client_id", "scopes", "scope", "username", "institution_user_id", "requested_scopes",
        "nonce", "aud", "auth_time", "code_challenge", "code_challenge_method",
    },
}

dropped: dict[str, int] = {}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def is_plain(name, value) -> bool:
    """One form pair the server takes as it is: a printable name and a scalar printable value
    (schemathesis sends a list as the name repeated, and nests dicts into odd encodings)."""
    return is_printable(name) and not isinstance(value, (list, dict)) and is_printable(value)


def extra_fields(case) -> dict:
    """The body's fields that its endpoint does not define."""
    body = case.body if isinstance(case.body, dict) else {}
    path = case.operation.path
    declared = next((f for suffix, f in DECLARED_FIELDS.items() if path.endswith(suffix)), set())
    return {k: v for k, v in body.items() if k not in declared}


def is_printable(text) -> bool:
    return all(" " <= ch <= "~" for ch in str(text))


def values(case) -> list:
    """Every generated name and value of the request (query, path, headers, form body)."""
    found = []
    for part in (case.query, case.path_parameters, case.headers, case.body):
        if isinstance(part, dict):
            for name, value in part.items():
                found.append(name)
                found.extend(as_list(value))
    return found


def sent(case, response) -> list:
    """What the request carried: the case's values and the decoded URL actually requested (some
    phases rewrite the path after generation)."""
    url = urllib.parse.urlsplit(getattr(response.request, "url", "") or "")
    return values(case) + [urllib.parse.unquote(url.path), urllib.parse.unquote_plus(url.query)]


def response_json(response):
    try:
        return json.loads(response.content)
    except (ValueError, TypeError, AttributeError):
        return None


def response_code(response):
    body = response_json(response)
    return body.get("code") if isinstance(body, dict) else None


def drop(reason: str) -> bool:
    dropped[reason] = dropped.get(reason, 0) + 1
    return False


def vendor_fault(failure, case, response) -> str | None:
    """Why this failure is the vendor document's own fault, or None."""
    # A probe for an undeclared method borrows another operation: the method sent is the case's.
    method, path = (case.method or case.operation.method).upper(), case.operation.path
    body = case.body if isinstance(case.body, dict) else {}
    if failure.code == "ST202" and response.status_code == 400 and any(v == "" for v in body.values()):
        return "vendor: required form fields without minLength (an empty value is a missing one)"
    if failure.code == "ST202" and response.status_code == 400 and not all(is_printable(v) for v in sent(case, response)):
        return "vendor: no printable-ASCII constraint (SPEC 3: CMN_90017 / ISR_10000)"
    if failure.code == "ST202" and path.endswith("/auth-code") and response_code(response) == "CMN_90011":
        auth_time, nonce, aud = (str(body.get(f, "")) for f in ("auth_time", "nonce", "aud"))
        if not re.fullmatch(r"[0-9]{0,12}", auth_time) or len(nonce) > 512 or len(aud) > 256:
            return "vendor: auth_time (epoch seconds), nonce and aud without a pattern or maxLength"
    if failure.code == "ST204" and (method, path) == ("POST", "/oauth2/v1/revoke"):
        return "vendor: lists only DELETE revoke (SPEC 3.2 adds POST, answered 200)"
    allow = {m.strip().upper() for m in response.headers.get("allow", [""])[0].split(",")} if hasattr(response, "headers") else set()
    if failure.code == "ST205" and path == "/oauth2/v1/revoke" and allow == {"POST", "DELETE"}:
        return "vendor: lists only DELETE revoke (SPEC 3.2 adds POST, so Allow says POST, DELETE)"
    if path == "/oauth2/v1/token" and failure.code in ("ST201", "ST202"):
        grant = body.get("grant_type")
        needed = GRANT_FIELDS.get(grant, ())
        complete = all(body.get(f) for f in needed)
        # Every branch of AccessTokenRequestV2 accepts every grant_type and the client_credentials
        # branch requires nothing else, so a complete password/refresh/code request matches two
        # branches (invalid under oneOf) and the only "valid" ones lack their grant's fields.
        if failure.code == "ST201" and grant in GRANT_FIELDS and complete:
            return "vendor: AccessTokenRequestV2 oneOf without a discriminator"
        if failure.code == "ST202" and not complete:
            return "vendor: AccessTokenRequestV2 oneOf without a discriminator"
    if failure.code == "ST108" and path == "/oauth2/v1/token":
        token = response_json(response)
        if isinstance(token, dict) and isinstance(token.get("expires_in"), int):
            return "vendor: expires_in as a string (SPEC 3.1: a number by default)"
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep a failure unless it is one of the documented ones that are not the server's fault
    (docs/interop.md, "What the script drops"). Returning False drops it; every drop is counted
    by reason and printed at the end of the run."""
    if failure.code == "ST202":
        code = response_code(response)
        if code in STATE_DEPENDENT:
            return drop(f"{code} depends on registered data: {STATE_DEPENDENT[code]}")
        # Fields the documents do not declare: OpenAPI 3.0 cannot constrain their names
        # (propertyNames is 3.1), and schemathesis sends list values as a repeated name. SPEC 3
        # refuses a non-ASCII field (CMN_90017) and a repeated one (CMN_90011).
        extra = extra_fields(case)
        if code in ("CMN_90011", "CMN_90017") and any(not is_plain(k, v) for k, v in extra.items()):
            return drop(f"undeclared form field that is not one printable name=value pair ({code})")
        # auth_time may be at most 5 minutes ahead of the server's clock, which no schema knows.
        auth_time = (case.body or {}).get("auth_time") if isinstance(case.body, dict) else None
        if code == "CMN_90011" and isinstance(auth_time, str) and auth_time.isdigit() and int(auth_time) > time.time() + 300:
            return drop("auth_time in the future (CMN_90011); the bound is the server's clock")
    if DOCUMENT == "vendor":
        reason = vendor_fault(failure, case, response)
        if reason:
            return drop(reason)
    return True


@atexit.register
def report_dropped() -> None:
    if dropped:
        print(f"\nDropped by hooks.py filter_failure ({DOCUMENT} document):", file=sys.stderr)
        for reason, count in sorted(dropped.items(), key=lambda item: -item[1]):
            print(f"  {count:6d}  {reason}", file=sys.stderr)
