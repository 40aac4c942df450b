"""Actions a pack names to resolve an intent, looked up in a registry by type.

Three declarative types cover a simple pack with no Python:

- ``reply``: answer from a template over the collected slots;
- ``lookup_record``: find a record in a data file by slot values, check that the
  verification slots match it, and answer from a template (a mismatch answers exactly like
  an unknown record, so nobody can probe which keys exist);
- ``create_request``: optionally verify like ``lookup_record``, state exactly what will
  happen, and after an explicit yes write a request durably (refunds, tickets).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from supportgraph.pack import Pack, PackFile


class RequestSink(Protocol):
    """Where ``create_request`` writes: the service's durable requests table."""

    async def create_request(
        self, *, session_id: str, kind: str, data: dict[str, Any], idempotency_key: str
    ) -> str:
        """Store a request once per idempotency key and return its id."""
        ...


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


def render(template: Template, values: Mapping[str, Any], record: Mapping[str, str] = {}) -> str:  # noqa: B006
    """Fill a pack template with slots and record fields (unknown fields stay visible)."""
    text = template.pick(record) if isinstance(template, Cases) else template
    merged = {**record, **values}
    return text.format_map(_Visible(merged))


class _Visible(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class ReplyParams(_Params):
    """Parameters of ``reply``."""

    template: str


class LookupParams(_Params):
    """Parameters of ``lookup_record``."""

    data: str
    key: dict[str, str] = Field(min_length=1, description="record field -> slot")
    verify: dict[str, str] = Field(default_factory=dict, description="record field -> slot")
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


class ActionType(Protocol):
    """A registry entry: validates its params and runs."""

    name: str
    changes_data: bool
    params_model: type[_Params]

    async def prepare(self, params: Any, call: ActionCall) -> ActionResult:
        """Run a read-only action, or check and describe a data-changing one ('confirm')."""
        ...

    async def execute(self, params: Any, call: ActionCall) -> ActionResult:
        """Carry out a data-changing action after the customer said yes."""
        ...


def _same(a: str, b: str) -> bool:
    # Constant-time, case- and space-insensitive comparison of a verification value.
    return hmac.compare_digest(a.strip().casefold().encode(), b.strip().casefold().encode())


def find_record(
    pack: Pack, params: LookupParams, slots: Mapping[str, str]
) -> dict[str, str] | None:
    """The record whose key fields equal the slots and whose verify fields match, else None."""
    for record in pack.records(params.data):
        if all(_same(record.get(f, ""), slots.get(s, "")) for f, s in params.key.items()):
            verified = all(
                slots.get(s) and _same(record.get(f, ""), slots[s])
                for f, s in params.verify.items()
            )
            return record if verified else None
    return None


class Reply:
    """``reply``: answer from a template."""

    name = "reply"
    changes_data = False
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
    changes_data = False
    params_model = LookupParams

    async def prepare(self, params: LookupParams, call: ActionCall) -> ActionResult:
        """Look the record up and answer from the found / not_found template."""
        record = find_record(call.pack, params, call.slots)
        if record is None:
            return ActionResult("not_found", render(params.not_found, call.slots))
        return ActionResult("done", render(params.found, call.slots, record), {"record": record})

    async def execute(self, params: LookupParams, call: ActionCall) -> ActionResult:
        """Same as prepare: nothing changes."""
        return await self.prepare(params, call)


class CreateRequest:
    """``create_request``: verify, confirm, then write a request durably."""

    name = "create_request"
    changes_data = True
    params_model = RequestParams

    def _verify(
        self, params: RequestParams, call: ActionCall
    ) -> tuple[ActionResult | None, dict[str, str]]:
        if params.lookup is None:
            return None, {}
        lookup = LookupParams.model_validate(call.pack.spec.actions[params.lookup].params)
        record = find_record(call.pack, lookup, call.slots)
        if record is None:
            return ActionResult("not_found", render(lookup.not_found, call.slots)), {}
        eligible = params.eligible
        if eligible and record.get(eligible.field, "").lower() not in {
            v.lower() for v in eligible.allowed
        }:
            return ActionResult("ineligible", render(params.ineligible, call.slots, record)), record
        return None, record

    async def prepare(self, params: RequestParams, call: ActionCall) -> ActionResult:
        """Verify and state exactly what will be done; the graph then asks for a yes."""
        refused, record = self._verify(params, call)
        if refused is not None:
            return refused
        return ActionResult("confirm", render(params.confirm, call.slots, record))

    async def execute(self, params: RequestParams, call: ActionCall) -> ActionResult:
        """Verify again (the data may have changed) and write the request once."""
        refused, record = self._verify(params, call)
        if refused is not None:
            return refused
        if call.requests is None:
            return ActionResult("failed", call.pack.message("action_failed"))
        names = params.fields if params.fields is not None else list(call.slots)
        data = {name: call.slots.get(name, "") for name in names}
        request_id = await call.requests.create_request(
            session_id=call.session_id,
            kind=params.kind,
            data=data,
            idempotency_key=call.idempotency_key,
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
