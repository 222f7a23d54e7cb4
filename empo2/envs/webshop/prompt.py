"""The WebShop prompt (EMPO2.md §3.4) and the reading of the model's answer.

Why one self-contained user message per step instead of a growing chat: a WebShop page is long
(ten results with titles run to hundreds of tokens), and 15 steps of full pages would not fit the
budget; the setup GiGPO and EMPO² use shows the request, how many steps were taken, the last two
pages with the action taken on each, the current page and the actions available on it. The
answer is free reasoning inside <think> … </think> followed by one action inside
<action> … </action>; an answer without both is malformed (a small penalty, EMPO2.md §3.4).
"""

from __future__ import annotations

import re

from empo2.envs.webshop.site import SEP

ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.DOTALL | re.IGNORECASE)
THINK_TAG = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)

FORMAT_INSTRUCTION = (
    "Think about the page and the request first, then choose exactly one action from the list above. "
    "Answer in this form:\n<think>your reasoning</think>\n<action>the action</action>"
)


def page_text(observation: str, instruction: str) -> str:
    """The page without its leading "WebShop" / "Instruction:" / request strings (the prompt states
    the request once)."""
    parts = observation.split(SEP)
    while parts and parts[0] in ("WebShop", "Instruction:", instruction):
        parts.pop(0)
    return SEP.join(parts)


def available_actions(has_search_bar: bool, clickables: list[str]) -> list[str]:
    return (["search[<your query>]"] if has_search_bar else []) + [f"click[{c}]" for c in clickables]


def step_message(instruction: str, history: list[tuple[str, str]], observation: str, actions: list[str],
                 keep: int = 2) -> str:
    """The user message of one step. `history`: (page, action) of every earlier step, oldest first."""
    lines = [
        "You are shopping on a web store for a customer. Find and buy the product that fits this request:",
        f"\"{instruction}\"",
        "",
        f"Steps taken so far: {len(history)}.",
    ]
    recent = history[-keep:] if keep > 0 else []
    if recent:
        lines.append(f"Your last {len(recent)} step(s), oldest first:")
        for page, action in recent:
            lines += [f"- page: {page_text(page, instruction)}", f"  your action: {action or '(none)'}"]
    lines += [
        "",
        f"Now (step {len(history) + 1}) the page shows:",
        page_text(observation, instruction),
        "",
        "Actions available on this page: " + ", ".join(actions),
    ]
    return "\n".join(lines)


def parse_answer(text: str) -> tuple[str, bool]:
    """(the action inside <action> … </action>, whether the answer was well formed: both tags).

    Without an action tag the action is empty (the step is a no-op)."""
    found = ACTION_TAG.search(text or "")
    action = " ".join(found.group(1).split()) if found else ""
    return action, bool(found) and bool(THINK_TAG.search(text or ""))
