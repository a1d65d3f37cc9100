"""Human approval from the command line (docs/approvals.md): list and show the requests that
wait for people, approve or refuse one with the approver's key, through a running service's
HTTP API (``GET /v1/approvals``, ``POST /v1/events``). Every call is signed with ``--key``
(RFC 9421, ``ledger.sdk.httpsig``): the API shows approvals to a principal with a read role
of the request's tenant, so an approver also holds ``reader`` (docs/approvals.md).

Exit codes of approve/refuse: 0 the request ended (granted or denied: printed), 1 the
approval was refused (the reason is printed), 2 usage, 3 service unavailable, 4 counted, the
request still waits for other approvers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.client_commands import ApiUrl, http_call
from ledger.cli.governance_commands import EXIT_PENDING, _detail
from ledger.cli.options import EXIT_INVALID, JsonFlag, emit
from ledger.errors import ConfigError, NotFound, Unavailable
from ledger.keyfiles import load_signer
from ledger.sdk.approvals import Approver
from ledger.sdk.httpsig import SignedRequests

RequestId = Annotated[str, typer.Argument(help="The request id (64 hex digits).")]
KeyOpt = Annotated[Path, typer.Option("--key", envvar="GOVLEDGER_APPROVER_KEY",
                                      help="The approver's private key file (signs the "
                                      "calls, and the approval).")]
AsOpt = Annotated[str, typer.Option("--as", envvar="GOVLEDGER_APPROVER_IDENTITY",
                                    help="The approver's identity.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait for the processor (0-30).")]


def _get(api_url: str, path: str, auth: SignedRequests, **params: object) -> object:
    """GET a JSON body. Raises NotFound (404), Unavailable (503 or unreachable) or
    ConfigError (any other failure, with the API's text)."""
    response = http_call("GET", api_url, path, params=params, auth=auth)
    if response.status_code == 404:
        raise NotFound(response.json().get("detail", f"{path}: not found"))
    if response.status_code == 503:
        raise Unavailable(f"the govledger API is unavailable: {response.text}")
    if response.status_code != 200:
        raise ConfigError(f"GET {path}: {response.status_code} {response.text}")
    return response.json()


def _line(view: dict[str, Any]) -> str:
    given = sum(1 for a in view["approvals"] if a["kind"] == "ApprovalGiven"
                and not a["refused"])
    return (f"{view['request_id']}  {view['state']:<8} {view['requester']} "
            f"{','.join(view['actions'])} {view['resource']}  {given}/{view['k']} "
            f"{view['role']} until {view['deadline']}")


def approvals_list(api_url: ApiUrl, key: KeyOpt, all_: Annotated[bool, typer.Option(
        "--all", help="Every request that waited, not only the pending ones.")] = False,
        tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
        as_json: JsonFlag = False) -> None:
    """The requests waiting for approval (oldest first): id, state, requester, what is
    asked, approvals so far of k, the role and the deadline."""
    params: dict[str, str] = {"pending": "false" if all_ else "true"}
    if tenant:
        params["tenant"] = tenant
    views = _get(api_url, "/v1/approvals", SignedRequests(load_signer(key)), **params)
    assert isinstance(views, list)
    emit({"approvals": views}, as_json,
         "\n".join(_line(v) for v in views) or "nothing waits for approval")


def approvals_show(request_id: RequestId, api_url: ApiUrl, key: KeyOpt,
                   as_json: JsonFlag = False) -> None:
    """One request's approval record: what is asked, by whom, the approvals and refusals
    so far (with the processor's refusal of any that could not count) and its state."""
    view = _get(api_url, f"/v1/approvals/{request_id}", SignedRequests(load_signer(key)))
    assert isinstance(view, dict)
    lines = [_line(view), f"  context: {view['context']}  policies: {view['policy_ids']}"]
    lines += [f"  {a['kind']} by {a['signer']} at {a['issued_at']}"
              + (f" REFUSED {','.join(a['refused'])}" if a.get("refused") else "")
              for a in view["approvals"]]
    emit(view, as_json, "\n".join(lines))


def _answer(request_id: str, api_url: ApiUrl, key: Path, identity: str, reason: str,
            wait: float, as_json: bool, *, refuse: bool) -> None:
    if not 0 <= wait <= 30:
        raise ConfigError("--wait must be within 0-30 seconds")
    signer = load_signer(key)
    auth = SignedRequests(signer)
    view = _get(api_url, f"/v1/approvals/{request_id}", auth)
    assert isinstance(view, dict)
    approver = Approver(identity, str(view["tenant"]), signer)
    build = approver.refuse if refuse else approver.approve
    envelope = build(request_id, str(view["root"]), reason)
    sent = http_call("POST", api_url, "/v1/events", content=envelope, params={"wait": wait},
                     timeout=wait + 15, auth=auth)
    body = sent.json()
    if sent.status_code not in (200, 202):
        emit(body, as_json, f"NOT SENT {body.get('reason')}: {body.get('detail', '')}")
        raise typer.Exit(EXIT_INVALID)
    if sent.status_code == 200:  # the processor answered the approval itself: refused
        answer = body["decision"]
        emit(body, as_json, f"REFUSED {','.join(answer['reasons'])}: "
             f"{_detail(answer['envelope'])}")
        raise typer.Exit(EXIT_INVALID)
    ended = http_call("GET", api_url, f"/v1/decisions/{request_id}", params={"wait": 1},
                      auth=auth)
    if ended.status_code == 200:
        decided = ended.json()
        verdict = "GRANTED" if decided["allow"] else f"DENIED {','.join(decided['reasons'])}"
        emit({**body, "request": decided}, as_json, f"{verdict} {request_id}")
        return
    emit(body, as_json, f"SENT {body['event_id']}: {request_id} still waits for approvals "
         "(govledger approvals show)")
    raise typer.Exit(EXIT_PENDING)


def approvals_approve(request_id: RequestId, api_url: ApiUrl, key: KeyOpt, identity: AsOpt,
                      reason: ReasonOpt = "", wait: WaitOpt = 3.0,
                      as_json: JsonFlag = False) -> None:
    """Approve a pending request (a signed ApprovalGiven). The k-th distinct approver's
    approval grants it. Example: govledger approvals approve ID --key ann.key --as human:ann
    --api http://127.0.0.1:8080"""
    _answer(request_id, api_url, key, identity, reason, wait, as_json, refuse=False)


def approvals_refuse(request_id: RequestId, api_url: ApiUrl, key: KeyOpt, identity: AsOpt,
                     reason: ReasonOpt = "", wait: WaitOpt = 3.0,
                     as_json: JsonFlag = False) -> None:
    """Refuse a pending request (a signed ApprovalRefused): one refusal by an approver
    denies it (APPROVAL_REFUSED)."""
    _answer(request_id, api_url, key, identity, reason, wait, as_json, refuse=True)
