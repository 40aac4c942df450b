"""Model calls and tokens per turn, for an FAQ turn and an order-status conversation.

The real ``langchain-openai`` client talks to a stubbed OpenAI endpoint (respx). The stub
answers the scripted structured outputs and reports ``prompt_tokens`` estimated from what
the client actually sent (messages + tool schema, 4 characters a token, since no tokenizer
can be downloaded here), so the figures show what a turn costs in calls and in context size.
Baseline in the same run: the same conversation in offline mode (0 calls).

    .venv/bin/python bench/llm_usage.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import respx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_settings, running_app, stub_llm_settings  # noqa: E402
from tests.utils.chat import Customer  # noqa: E402
from tests.utils.openai import COMPLETIONS, requested_tool, tool_call_response  # noqa: E402

SECRET = "bench-secret-of-at-least-32-bytes-long"


def _order() -> dict[str, str]:
    with (ROOT / "packs/store/data/orders.csv").open(newline="") as fh:
        return next(r for r in csv.DictReader(fh) if r["status"] == "delivered")


class EstimatingModel:
    """Answer scripted tool calls; report prompt tokens estimated from the request body."""

    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        self.script = script

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """One completion."""
        tool = requested_tool(request)
        answers = self.script[tool]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        body = json.loads(request.content)
        sent = json.dumps(body.get("messages")) + json.dumps(body.get("tools"))
        out = json.dumps(answer)
        tokens = (math.ceil(len(sent) / 4), math.ceil(len(out) / 4))
        return httpx.Response(200, json=tool_call_response(tool, answer, tokens=tokens))


async def _conversation(messages: list[str], script: dict[str, Any] | None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, Any] = {"sqlite_path": Path(tmp) / "b.sqlite", "secret_key": SECRET}
        if script is None:
            async with running_app(make_settings(**overrides)) as client:
                customer = Customer(client)
                return [await customer.say(m) for m in messages]
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(COMPLETIONS).mock(side_effect=EstimatingModel(script))
            async with running_app(make_settings(**overrides, **stub_llm_settings())) as client:
                customer = Customer(client)
                return [await customer.say(m) for m in messages]


async def main(json_path: Path | None) -> None:
    """Run both conversations in both modes and print the table."""
    order = _order()
    classify = {"intent": "faq", "confidence": 0.93, "sentiment": "neutral", "confirmation": "none"}
    faq = {
        "FaqAnswer": [
            {"answerable": True, "answer": "You have 30 days.", "used_ids": ["return-policy"]}
        ],
        "Classification": [classify],
    }
    status = {"intent": "order_status", "confidence": 0.95, "sentiment": "neutral"}
    orders = {
        "Classification": [status],
        "SlotValues": [
            {},
            {"order_number": order["order_id"]},
            {"order_number": order["order_id"], "email": order["email"]},
        ],
    }
    runs = {
        "FAQ turn": ["How many days do I have to return something?"],
        "order status (3 turns)": [
            "Where is my order?",
            f"It's order {order['order_id']}",
            order["email"],
        ],
    }
    scripts: dict[str, dict[str, Any] | None] = {"FAQ turn": faq, "order status (3 turns)": orders}
    table = Table(title="LLM calls and tokens per turn (stubbed model; offline baseline)")
    for col in (
        "conversation",
        "turn",
        "route",
        "calls",
        "in tokens",
        "out tokens",
        "offline calls",
    ):
        table.add_column(col)
    results = []
    for name, messages in runs.items():
        stub = await _conversation(messages, scripts[name])
        offline = await _conversation(messages, None)
        for i, (s, o) in enumerate(zip(stub, offline, strict=True), 1):
            u = s["usage"]
            row = {
                "conversation": name,
                "turn": i,
                "route": s["route"],
                "llm_calls": u["llm_calls"],
                "input_tokens": u["input_tokens"],
                "output_tokens": u["output_tokens"],
                "offline_llm_calls": o["usage"]["llm_calls"],
            }
            results.append(row)
            table.add_row(
                name,
                str(i),
                " → ".join(s["route"]),
                str(u["llm_calls"]),
                str(u["input_tokens"]),
                str(u["output_tokens"]),
                str(o["usage"]["llm_calls"]),
            )
    Console(width=140).print(table)
    if json_path:
        json_path.write_text(json.dumps({"turns": results}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    asyncio.run(main(parser.parse_args().json))
