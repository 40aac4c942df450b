"""Actions a pack names to resolve an intent, looked up in a registry by type.

Three declarative types cover a simple pack with no Python:

- ``reply``: answer from a template over the collected slots;
- ``lookup_record``: find a record in a data file by slot values, check that the
  verification slots match it, and answer from a template (a mismatch answers exactly like
  an unknown record, so nobody can probe which keys exist);
- ``create_request``: optionally verify like ``lookup_record``, state exactly what will
  happen, and after an explicit yes write a request durably (refunds, tickets).

Authorization is code, not prompt: a record is shown only when the verification slots match
THAT record, on every lookup (nothing about an earlier verification carries over), and
``create_request`` verifies again when it runs. The ``resolve`` node runs ``execute`` only
after the customer's own message says yes. Each decision is audited (:func:`audit`): the
action, its outcome and reason, under the session's pseudonym, with the record named only by
a keyed hash (:func:`record_ref`); never a slot value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from supportgraph.domain.pack import Pack, PackFile, Placeholders
from supportgraph.domain.ports import (
    AuditSink,
    Failed,
    Found,
    RecordSource,
    RequestSink,
)
from supportgraph.domain.records import PackRecords, same

log = logging.getLogger("supportgraph.actions")

AuditOutcome = Literal["taken", "refused", "pending", "failed"]
"""What became of an action: done, refused, waiting for a yes, or failed on our side."""
Reason = Literal[
    "verified",
    "verification_failed",
    "not_found",
    "ineligible",
    "awaiting_confirmation",
    "confirmed",
    "not_confirmed",
    "cancelled",
    "abandoned",
    "refused_by_policy",
    "error",
]
"""Why: the record matched / did not / does not exist, the customer said yes / no / neither..."""


@dataclass(frozen=True)
class ActionResult:
    """What an action did: ``status`` drives the graph, ``reply`` is what the customer reads."""

    status: Literal["done", "confirm", "not_found", "ineligible", "failed"]
    reply: str
    data: dict[str, Any] = field(default_factory=dict)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cases(_Params):
    """A template chosen by the value of a record field."""

    field: str
    cases: dict[str, str]
    default: str

    def pick(self, record: Mapping[str, str]) -> str:
        """The template for this record."""
        value = str(record.get(self.field, "")).casefold()
        cases = {key.casefold(): template for key, template in self.cases.items()}
        return cases.get(value, self.default)


Template = str | Cases


def render(
    template: Template, values: Mapping[str, Any], record: Mapping[str, str] | None = None
) -> str:
    """Fill a pack template with slots and record fields (unknown fields stay visible)."""
    record = record or {}
    text = template.pick(record) if isinstance(template, Cases) else template
    return text.format_map(Placeholders({**record, **values}))


class ReplyParams(_Params):
    """Parameters of ``reply``."""

    template: str


class LookupParams(_Params):
    """Parameters of ``lookup_record``."""

    data: str
    key: dict[str, str] = Field(min_length=1, description="record field -> slot")
    verify: dict[str, str] = Field(default_factory=dict, description="record field -> slot")
    private: list[str] = Field(
        default_factory=list,
        description="Record fields that are personal data (a name, a tracking number): like the "
        "key and verify fields, never shown except from a record verified in the conversation.",
    )
    found: Template
    not_found: str


class Eligibility(_Params):
    """Which records an action may run on."""

    field: str
    allowed: list[str] = Field(alias="in", min_length=1)


class RequestParams(_Params):
    """Parameters of ``create_request``."""

    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    lookup: str | None = Field(default=None, description="a lookup_record action to verify with")
    eligible: Eligibility | None = None
    ineligible: str = "I can't do that for this one. A member of our team can help if you ask."
    fields: list[str] | None = None
    confirm: str
    done: str


@dataclass(frozen=True)
class ActionCall:
    """Everything an action run gets."""

    pack: Pack
    slots: Mapping[str, str]
    session_id: str
    idempotency_key: str
    requests: RequestSink | None
    action: str = ""
    """The pack's name for the action (``lookup_order``), for the audit log."""
    audit: AuditSink | None = None
    records: Callable[[str], RecordSource] | None = None
    """The record source an action names (default: the pack's data file of that name)."""

    def source(self, name: str) -> RecordSource:
        """The records ``name`` stands for."""
        return self.records(name) if self.records is not None else PackRecords(self.pack, name)


def record_ref(session_id: str, data: str, key: Mapping[str, str]) -> str:
    """A record's name in the audit log: an HMAC of its data file and key, keyed by the session.

    Entries of one session about one record share it; nobody can turn it back into an order
    number without the session id, which the audit log does not keep (and a deleted session
    no longer has).
    """
    text = data + "|" + "|".join(f"{f}={str(v).strip().casefold()}" for f, v in sorted(key.items()))
    return hmac.new(session_id.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


async def audit(
    call: ActionCall,
    *,
    kind: str,
    outcome: AuditOutcome,
    reason: Reason,
    ref: str | None = None,
    request_id: str | None = None,
) -> None:
    """Log and store one decision about an action; a failed write raises (fail closed)."""
    log.info(
        "action audited",
        extra={
            "session_id": call.session_id,
            "action": call.action,
            "kind": kind,
            "outcome": outcome,
            "reason": reason,
        },
    )
    if call.audit is not None:
        await call.audit.audit_action(
            session_id=call.session_id,
            action=call.action,
            kind=kind,
            outcome=outcome,
            reason=reason,
            record_ref=ref,
            request_id=request_id,
        )


class ActionType(Protocol):
    """A registry entry: validates its params and runs."""

    @property
    def name(self) -> str:
        """The name a pack's ``uses`` gives."""
        ...

    @property
    def params_model(self) -> type[_Params]:
        """The model the pack's ``params`` must validate against."""
        ...

    async def prepare(self, params: Any, call: ActionCall) -> ActionResult:
        """Run a read-only action, or check and describe a data-changing one ('confirm')."""
        ...

    async def execute(self, params: Any, call: ActionCall) -> ActionResult:
        """Carry out a data-changing action after the customer said yes."""
        ...


@dataclass(frozen=True)
class Match:
    """A lookup's result: the verified record, or why there is none."""

    record: Mapping[str, str] | None
    reason: Literal["verified", "verification_failed", "not_found", "source_failed"]


async def match_record(call: ActionCall, params: LookupParams) -> Match:
    """The record whose key fields equal the slots, if its verify fields match them too.

    Every verify slot must be given and equal the record's field: a key alone never reveals a
    record, whatever was verified before.
    """
    slots = call.slots
    key = {f: slots.get(s, "") for f, s in params.key.items()}
    result = await call.source(params.data).lookup(key)
    if isinstance(result, Failed):
        log.warning("record source failed", extra={"source": params.data, "reason": result.reason})
        return Match(None, "source_failed")
    if not isinstance(result, Found):
        return Match(None, "not_found")
    record = result.record
    verified = all(
        slots.get(s) and same(record.get(f, ""), slots[s]) for f, s in params.verify.items()
    )
    return Match(record, "verified") if verified else Match(None, "verification_failed")


def _lookup_ref(call: ActionCall, params: LookupParams) -> str:
    return record_ref(
        call.session_id, params.data, {f: call.slots.get(s, "") for f, s in params.key.items()}
    )


async def _verified(
    call: ActionCall, params: LookupParams, kind: str
) -> tuple[ActionResult | None, Mapping[str, str], str]:
    """The verified record, or the refusal (audited) that answers instead of it.

    An unknown record and a failed verification read the same; a source that could not answer
    is our failure, not the customer's.
    """
    match = await match_record(call, params)
    ref = _lookup_ref(call, params)
    if match.reason == "source_failed":
        await audit(call, kind=kind, outcome="failed", reason="error", ref=ref)
        return ActionResult("failed", call.pack.message("action_failed")), {}, ref
    if match.record is None:
        await audit(call, kind=kind, outcome="refused", reason=match.reason, ref=ref)
        return ActionResult("not_found", render(params.not_found, call.slots)), {}, ref
    return None, match.record, ref


class Reply:
    """``reply``: answer from a template."""

    name = "reply"
    params_model = ReplyParams

    async def prepare(self, params: ReplyParams, call: ActionCall) -> ActionResult:
        """Render the template."""
        return ActionResult("done", render(params.template, call.slots))

    async def execute(self, params: ReplyParams, call: ActionCall) -> ActionResult:
        """Same as prepare: nothing changes."""
        return await self.prepare(params, call)


class LookupRecord:
    """``lookup_record``: a verified record lookup in a data file."""

    name = "lookup_record"
    params_model = LookupParams

    async def prepare(self, params: LookupParams, call: ActionCall) -> ActionResult:
        """Look the record up and answer from the found / not_found template (audited first)."""
        refused, record, ref = await _verified(call, params, self.name)
        if refused is not None:
            return refused
        await audit(call, kind=self.name, outcome="taken", reason="verified", ref=ref)
        return ActionResult("done", render(params.found, call.slots, record))

    async def execute(self, params: LookupParams, call: ActionCall) -> ActionResult:
        """Same as prepare: nothing changes."""
        return await self.prepare(params, call)


class CreateRequest:
    """``create_request``: verify, confirm, then write a request durably."""

    name = "create_request"
    params_model = RequestParams

    async def _verify(
        self, params: RequestParams, call: ActionCall
    ) -> tuple[ActionResult | None, Mapping[str, str], str | None]:
        """The refusal (audited) or the verified record, and the record's audit name."""
        if params.lookup is None:
            return None, {}, None
        lookup = LookupParams.model_validate(call.pack.spec.actions[params.lookup].params)
        refused, record, ref = await _verified(call, lookup, self.name)
        if refused is not None:
            return refused, record, ref
        eligible = params.eligible
        if eligible and record.get(eligible.field, "").lower() not in {
            v.lower() for v in eligible.allowed
        }:
            await audit(call, kind=self.name, outcome="refused", reason="ineligible", ref=ref)
            refused = ActionResult("ineligible", render(params.ineligible, call.slots, record))
            return refused, record, ref
        return None, record, ref

    async def prepare(self, params: RequestParams, call: ActionCall) -> ActionResult:
        """Verify and state exactly what will be done; the graph then asks for a yes."""
        refused, record, ref = await self._verify(params, call)
        if refused is not None:
            return refused
        await audit(
            call, kind=self.name, outcome="pending", reason="awaiting_confirmation", ref=ref
        )
        return ActionResult("confirm", render(params.confirm, call.slots, record))

    async def execute(self, params: RequestParams, call: ActionCall) -> ActionResult:
        """Verify again (the data may have changed) and write the request once."""
        refused, record, ref = await self._verify(params, call)
        if refused is not None:
            return refused
        if call.requests is None:
            await audit(call, kind=self.name, outcome="failed", reason="error", ref=ref)
            return ActionResult("failed", call.pack.message("action_failed"))
        names = params.fields if params.fields is not None else list(call.slots)
        data = {name: call.slots.get(name, "") for name in names}
        request_id = await call.requests.create_request(
            session_id=call.session_id,
            kind=params.kind,
            data=data,
            idempotency_key=call.idempotency_key,
        )
        await audit(
            call,
            kind=self.name,
            outcome="taken",
            reason="confirmed",
            ref=ref,
            request_id=request_id,
        )
        values = {**call.slots, "request_id": request_id}
        return ActionResult("done", render(params.done, values, record), {"request_id": request_id})


REGISTRY: dict[str, ActionType] = {a.name: a for a in (Reply(), LookupRecord(), CreateRequest())}
"""The action types a pack may use, by name."""


def check_actions(spec: PackFile, registry: Mapping[str, ActionType] = REGISTRY) -> list[str]:
    """Problems with the pack's actions: unknown types, bad params, unknown template fields."""
    problems: list[str] = []
    for name, action in spec.actions.items():
        where = f"pack.yaml: actions.{name}"
        kind = registry.get(action.uses)
        if kind is None:
            known = ", ".join(sorted(registry))
            problems.append(f"{where}.uses: unknown action type {action.uses!r} (known: {known})")
            continue
        try:
            params = kind.params_model.model_validate(action.params)
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(p) for p in e["loc"])
                problems.append(f"{where}.params.{loc}: {e['msg']}")
            continue
        problems += _check_refs(spec, name, params)
    return problems


def _check_refs(spec: PackFile, name: str, params: _Params) -> list[str]:
    where = f"pack.yaml: actions.{name}.params"
    problems: list[str] = []
    slot_maps = [getattr(params, attr, {}) or {} for attr in ("key", "verify")]
    for mapping in slot_maps:
        for slot in mapping.values():
            if slot not in spec.slots:
                problems.append(f"{where}: slot {slot!r} is referenced but not declared")
    if isinstance(params, RequestParams) and params.lookup is not None:
        target = spec.actions.get(params.lookup)
        if target is None or target.uses != "lookup_record":
            problems.append(f"{where}.lookup: {params.lookup!r} is not a lookup_record action")
    for slot in getattr(params, "fields", None) or []:
        if slot not in spec.slots:
            problems.append(f"{where}.fields: slot {slot!r} is referenced but not declared")
    return problems
