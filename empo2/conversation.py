"""An agent's chat history, rendered to token ids by the model's own chat template.

Why structured messages instead of strings: EMPO² trains some steps on the prompt *without* the
tips that were shown during the rollout (EMPO2.md §6.3). Keeping tips as a separate field of each
user message makes removal exact: render with `with_tips=False` and the chat template runs again
on the tip-free messages; nobody pattern-matches token ids. The short per-turn instruction is also
kept apart so it appears on the latest user message only.

Over-long prompts: when the rendered prompt exceeds the budget, the oldest assistant/user turn
pairs after the first user message are dropped (the first message holds the task) until it fits;
`Rendered.dropped_turns` reports how many, and the rollout logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TIP_HEADER = "Notes from your earlier attempts at this task (they may help you explore):"


@dataclass
class Message:
    role: str
    """`user` or `assistant`."""
    content: str
    """The text (observation or action)."""
    tips: list[str] = field(default_factory=list)
    """Memory tips shown with this user message (EMPO2.md §3.2)."""


def tip_block(tips: list[str]) -> str:
    return "\n".join([TIP_HEADER, *(f"<tip>{t}</tip>" for t in tips)])


@dataclass
class Rendered:
    ids: list[int]
    dropped_turns: int
    """History turn pairs removed to fit the budget."""
    too_long: bool
    """Even the shortest history exceeds the budget (the prompt is then left-truncated)."""


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)
    instruction: str = ""
    """Appended to the latest user message only."""
    tips_scope: str = "all"
    """`all`: every user message shows its own tips; `current`: only the latest one does."""
    history: str = "chat"
    """`chat`: the prompt is every message; `latest`: only the last one (an environment that writes
    a self-contained message per step, e.g. WebShop)."""

    def prefix(self, n_messages: int) -> "Conversation":
        """The conversation as it stood with its first `n_messages` messages."""
        return Conversation(list(self.messages[:n_messages]), self.instruction, self.tips_scope, self.history)

    def add_user(self, content: str, tips: list[str] | None = None) -> None:
        self.messages.append(Message("user", content, list(tips or [])))

    def add_assistant(self, content: str) -> None:
        self.messages.append(Message("assistant", content))

    def chat(self, with_tips: bool = True, drop_turns: int = 0) -> list[dict[str, Any]]:
        """Plain chat messages; `drop_turns` removes that many oldest turn pairs after the first."""
        if self.history == "latest":
            msgs = self.messages[-1:]
        else:
            msgs = self.messages[:1] + self.messages[1 + 2 * drop_turns:]
        out = []
        for i, m in enumerate(msgs):
            parts = [m.content]
            if with_tips and m.tips and (self.tips_scope == "all" or i == len(msgs) - 1):
                parts.append(tip_block(m.tips))
            if i == len(msgs) - 1 and m.role == "user" and self.instruction:
                parts.append(self.instruction)
            out.append({"role": m.role, "content": "\n\n".join(parts)})
        return out

    def render(self, tokenizer, max_tokens: int, with_tips: bool = True) -> Rendered:
        """Token ids of the prompt (generation prompt included), within `max_tokens`."""
        max_drop = 0 if self.history == "latest" else max(0, (len(self.messages) - 2) // 2)
        drop = 0
        while True:
            text = tokenizer.apply_chat_template(
                self.chat(with_tips, drop), tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= max_tokens or drop >= max_drop:
                break
            drop += 1
        too_long = len(ids) > max_tokens
        return Rendered(ids[-max_tokens:] if too_long else ids, drop, too_long)
