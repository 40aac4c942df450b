"""``handle_faq``: answers cite the entries used; a miss invents nothing and follows the pack."""

from __future__ import annotations

from typing import Any

import httpx

from nodes.faq import handle_faq
from tests.utils.packs import faq_entry

ANSWERABLE = "How do I return an item for a refund?"
RETURN_WINDOW = "How many days do I have to return something?"
UNANSWERABLE = "what is your CEO called?"
ISP_UNANSWERABLE = "Do you offer a static IP address?"


def hits_for(ctx: Any, text: str) -> list[Any]:
    """What retrieval finds for ``text`` with the pack's FAQ settings."""
    faq = ctx.pack.spec.faq
    return ctx.faq_index.search(
        text, k=faq.top_k, min_score=faq.min_score, min_coverage=faq.min_coverage
    )


def assert_invents_nothing(ctx: Any, reply: str) -> None:
    """No FAQ entry's body was given as an answer."""
    for entry in ctx.pack.faq:
        assert entry.body not in reply, f"answered from {entry.id}"


async def test_offline_answer_cites_the_entry_it_used(run: Any, state: Any, ctx: Any) -> None:
    out = await run(handle_faq, state(RETURN_WINDOW, intent="faq", failures=1), ctx)
    best = hits_for(ctx, RETURN_WINDOW)[0].entry
    assert best.id == "return-policy"
    assert out["reply"] == best.body
    assert out["citations"] == [{"id": best.id, "title": best.title}]
    assert out["tried"][-1] == f"faq: {best.id}"
    assert (out["status"], out["failures"], out["goes_to"]) == ("active", 0, "end")


async def test_answer_through_the_graph(chat: Any) -> None:
    conv = chat()
    out = await conv.say("do you ship to Canada?")
    assert out["route"] == ["classify_intent", "handle_faq"]
    cited = [faq_entry(conv.ctx.pack, c["id"]) for c in out["citations"]]
    assert len(cited) == 1 and cited[0] is not None
    assert out["reply"].endswith(cited[0].body)
    assert "Canada" in cited[0].body


async def test_store_miss_collects_a_ticket(chat: Any) -> None:
    conv = chat()
    assert hits_for(conv.ctx, UNANSWERABLE) == []
    out = await conv.say(UNANSWERABLE)
    pack = conv.ctx.pack
    assert pack.spec.escalation.faq_miss_intent == "support_ticket"
    assert out["route"] == ["classify_intent", "handle_faq", "collect_info"]
    assert (out["intent"], out["status"]) == ("support_ticket", "awaiting_info")
    assert out.get("citations", []) == []
    assert pack.message("faq_miss") in out["reply"]
    assert pack.spec.slots["question"].prompt in out["reply"]
    assert_invents_nothing(conv.ctx, out["reply"])
    state = await conv.state()
    assert state["failures"] == 1
    assert state["tried"] == ["faq: no answer for faq"]


async def test_store_miss_after_repeated_failures_escalates(run: Any, state: Any, ctx: Any) -> None:
    limit = ctx.pack.spec.escalation.max_failures
    out = await run(handle_faq, state(UNANSWERABLE, intent="faq", failures=limit - 1), ctx)
    assert (out["goes_to"], out["handoff_reason"]) == ("escalate_human", "no_answer")
    assert out["failures"] == limit


async def test_isp_miss_escalates_with_no_answer(chat: Any) -> None:
    conv = chat("isp")
    assert conv.ctx.pack.spec.escalation.faq_miss == "escalate_human"
    assert hits_for(conv.ctx, ISP_UNANSWERABLE) == []
    out = await conv.say(ISP_UNANSWERABLE)
    assert out["route"] == ["classify_intent", "handle_faq", "escalate_human"]
    assert out["status"] == "escalated"
    assert out["escalation"]["reason"] == "no_answer"
    assert out.get("citations", []) == []
    assert_invents_nothing(conv.ctx, out["reply"])


async def test_not_understood_asks_to_rephrase(run: Any, state: Any, ctx: Any) -> None:
    out = await run(handle_faq, state("?", intent="other", failures=1), ctx)
    assert out["reply"] == ctx.pack.message("clarify")
    assert out["goes_to"] == "end"
    assert "failures" not in out and "citations" not in out


# --- with the model (stubbed HTTP endpoint) ------------------------------------------------


async def test_model_answer_cites_the_ids_it_used(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    hits = hits_for(model_ctx, ANSWERABLE)
    assert len(hits) >= 2
    used = hits[1].entry
    model = llm(
        {"FaqAnswer": [{"answerable": True, "answer": " Thirty days. ", "used_ids": [used.id]}]}
    )
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    assert model.calls == ["FaqAnswer"]
    assert out["reply"] == "Thirty days."
    assert out["citations"] == [{"id": used.id, "title": used.title}]
    assert out["usage"]["llm_calls"] == 1


async def test_model_unanswerable_does_not_invent(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    assert hits_for(model_ctx, ANSWERABLE), "the model is asked only when entries were found"
    llm({"FaqAnswer": [{"answerable": False, "answer": "Probably 14 days.", "used_ids": []}]})
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    assert "reply" not in out and "citations" not in out
    assert (out["goes_to"], out["intent"]) == ("collect_info", "support_ticket")
    assert out["failures"] == 1


async def test_model_empty_answer_is_a_miss(run: Any, state: Any, model_ctx: Any, llm: Any) -> None:
    llm({"FaqAnswer": [{"answerable": True, "answer": "   ", "used_ids": ["return-policy"]}]})
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    assert "citations" not in out
    assert out["goes_to"] == "collect_info"


async def test_unknown_used_ids_fall_back_to_the_best_entry(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    hits = hits_for(model_ctx, ANSWERABLE)
    retrieved = {h.entry.id for h in hits}
    elsewhere = next(e.id for e in model_ctx.pack.faq if e.id not in retrieved)
    answer = {"answerable": True, "answer": "30 days.", "used_ids": ["no-such-entry", elsewhere]}
    llm({"FaqAnswer": [answer]})
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    best = hits[0].entry
    assert out["citations"] == [{"id": best.id, "title": best.title}]


async def test_known_and_unknown_used_ids_cite_only_the_retrieved(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    hits = hits_for(model_ctx, ANSWERABLE)
    ids = [h.entry.id for h in hits]
    assert len(ids) >= 3
    used = [ids[2], "made-up-id", ids[0]]
    llm({"FaqAnswer": [{"answerable": True, "answer": "30 days.", "used_ids": used}]})
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    assert [c["id"] for c in out["citations"]] == [ids[0], ids[2]], "in retrieval order"


async def test_model_failure_answers_from_the_best_entry(
    run: Any, state: Any, model_ctx: Any, llm: Any
) -> None:
    llm({"FaqAnswer": [httpx.Response(503, json={"error": {"message": "busy"}})]})
    out = await run(handle_faq, state(ANSWERABLE, intent="faq"), model_ctx)
    best = hits_for(model_ctx, ANSWERABLE)[0].entry
    assert out["reply"] == best.body
    assert [c["id"] for c in out["citations"]] == [best.id]
    assert out["usage"]["degraded"] == 1


async def test_no_hits_means_no_model_call(run: Any, state: Any, model_ctx: Any, llm: Any) -> None:
    model = llm({"FaqAnswer": [{"answerable": True, "answer": "Our CEO is Bob.", "used_ids": []}]})
    out = await run(handle_faq, state(UNANSWERABLE, intent="faq"), model_ctx)
    assert model.calls == []
    assert "reply" not in out
    assert out["goes_to"] == "collect_info"
