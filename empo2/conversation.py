"""An agent's chat history, rendered to token ids by the model's own chat template.

Why structured messages instead of strings: EMPO² trains some steps on the prompt *without* the
tips that were shown during the rollout (EMPO2.md §6.3). Keeping tips as a separate field of each
user message makes removal exact: render with `with_tips=False` and the chat template runs again
on the tip-free messages; nobody pattern-matches token ids.

Why prompts form a chain (the default, `history_tokens="sampled"`, `instruction_every_turn=True`):
step t+1's prompt is step t's prompt, then the response ids the engine sampled at step t, then the
tokens that close that turn and open the next user turn (rendered once by the chat template). An
episode's prompts are then prefixes of each other, so the trainer can score the whole episode in
one forward with a response span per step (`empo2.training_rows`), instead of one forward per step
over a history that grows every turn. Two things had to change for that, each kept as a switch:
the history holds the sampled tokens, not the parsed action re-rendered through the template
(`history_tokens="parsed"`), and the short per-turn instruction stays on every user turn instead of
moving to the latest one (`instruction_every_turn=False`). The tip-free rendering forms its own
chain the same way (`step_prompts(with_tips=False)`).

A chain breaks, and the prompt is rendered from the messages again, when it would exceed the
budget (the oldest assistant/user turn pairs after the first user message are then dropped:
`history_drop="fit"` drops the fewest that fit, so every later step overflows again and starts a
new segment; `"half"` drops at least half of the history turns, so the chain has room to grow for
several steps before the next break; `Rendered.dropped_turns` says how many), when only the latest message is shown
(`history="latest"`, e.g. WebShop), and when only the latest step's tips are shown
(`tips_scope="current"`) and an earlier step had tips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TIP_HEADER = "Notes from your earlier attempts at this task (they may help you explore):"

_TURN_MARK = "\u2063EMPO2-TURN\u2063"
"""Stands in for an assistant turn's content when the template is asked what follows a turn."""


@dataclass
class Message:
    role: str
    """`user` or `assistant`."""
    content: str
    """The text (observation, or the parsed action)."""
    tips: list[str] = field(default_factory=list)
    """Memory tips shown with this user message (EMPO2.md §3.2)."""
    token_ids: list[int] | None = None
    """Assistant turns: the response ids exactly as sampled (what a chained prompt repeats)."""


def tip_block(tips: list[str]) -> str:
    return "\n".join([TIP_HEADER, *(f"<tip>{t}</tip>" for t in tips)])


@dataclass
class Rendered:
    ids: list[int]
    dropped_turns: int
    """History turn pairs removed to fit the budget."""
    too_long: bool
    """Even the shortest history exceeds the budget (the prompt is then left-truncated)."""
    chained: bool = False
    """This prompt is the previous step's prompt + its sampled response + the turn's glue tokens."""


def turn_glue(tokenizer, user_content: str, response_ids: list[int]) -> list[int]:
    """The tokens the chat template puts between an assistant turn's content and the next
    generation prompt (end of turn, the next user message, the assistant header), for a response
    that was sampled as `response_ids`. When the response already ends with the end-of-turn token
    the template would write, it is not written twice."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "."}, {"role": "assistant", "content": _TURN_MARK},
         {"role": "user", "content": user_content}],
        tokenize=False, add_generation_prompt=True,
    )
    glue = text[text.index(_TURN_MARK) + len(_TURN_MARK):]
    if response_ids:
        last = tokenizer.decode(response_ids[-1:], skip_special_tokens=False)
        if last and last.strip() and glue.startswith(last):
            glue = glue[len(last):]
    return tokenizer(glue, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class PromptLayout:
    """How a rollout lays out its prompts (`rollout.history_tokens`, `rollout.instruction`,
    `memory.tips_in_history`); rollouts, evaluation and the warm start use the same one."""

    history_tokens: str = "sampled"
    instruction_every_turn: bool = True
    tips_scope: str = "all"
    history_drop: str = "half"

    def start(self, instruction: str, history: str) -> "Conversation":
        """An empty conversation with this layout and the environment's instruction and history."""
        return Conversation(instruction=instruction, tips_scope=self.tips_scope, history=history,
                            instruction_every_turn=self.instruction_every_turn, history_tokens=self.history_tokens,
                            history_drop=self.history_drop)


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)
    instruction: str = ""
    """The short per-turn instruction (`TextEnv.turn_instruction`)."""
    tips_scope: str = "all"
    """`all`: every user message shows its own tips; `current`: only the latest one does."""
    history: str = "chat"
    """`chat`: the prompt is every message; `latest`: only the last one (an environment that writes
    a self-contained message per step, e.g. WebShop)."""
    instruction_every_turn: bool = True
    """True: every user message carries the instruction (kept in history, so prompts chain); False:
    only the latest one does (the authors' layout; no chain)."""
    history_tokens: str = "sampled"
    """`sampled`: assistant turns repeat the sampled response ids (prompts chain); `parsed`: the
    parsed action re-rendered through the template."""
    history_drop: str = "half"
    """Over the budget: `fit` drops the fewest oldest turn pairs that fit; `half` at least half of them."""
    _last: dict[bool, tuple[int, Rendered]] = field(default_factory=dict, repr=False, compare=False)
    """with_tips -> (messages rendered, the prompt) of the latest render: what the next one extends."""

    def settings(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "tips_scope": self.tips_scope, "history": self.history,
                "instruction_every_turn": self.instruction_every_turn, "history_tokens": self.history_tokens,
                "history_drop": self.history_drop}

    def prefix(self, n_messages: int) -> "Conversation":
        """The conversation as it stood with its first `n_messages` messages (renders from scratch)."""
        return Conversation(list(self.messages[:n_messages]), **self.settings())

    def add_user(self, content: str, tips: list[str] | None = None) -> None:
        self.messages.append(Message("user", content, list(tips or [])))

    def add_assistant(self, content: str, token_ids: list[int] | None = None) -> None:
        self.messages.append(Message("assistant", content, token_ids=list(token_ids) if token_ids is not None else None))

    def _user_text(self, m: Message, with_tips: bool, latest: bool) -> str:
        parts = [m.content]
        if with_tips and m.tips and (self.tips_scope == "all" or latest):
            parts.append(tip_block(m.tips))
        if self.instruction and (self.instruction_every_turn or latest):
            parts.append(self.instruction)
        return "\n\n".join(parts)

    def chat(self, with_tips: bool = True, drop_turns: int = 0) -> list[dict[str, Any]]:
        """Plain chat messages; `drop_turns` removes that many oldest turn pairs after the first."""
        if self.history == "latest":
            msgs = self.messages[-1:]
        else:
            msgs = self.messages[:1] + self.messages[1 + 2 * drop_turns:]
        out = []
        for i, m in enumerate(msgs):
            latest = i == len(msgs) - 1
            content = self._user_text(m, with_tips, latest) if m.role == "user" else m.content
            out.append({"role": m.role, "content": content})
        return out

    def render(self, tokenizer, max_tokens: int, with_tips: bool = True) -> Rendered:
        """Token ids of the prompt (generation prompt included), within `max_tokens`: the previous
        render extended by one turn where the chain holds, else rendered from the messages."""
        chained = self._extend(tokenizer, max_tokens, with_tips)
        rendered = chained if chained is not None else self._render_messages(tokenizer, max_tokens, with_tips)
        self._last[with_tips] = (len(self.messages), rendered)
        return rendered

    def _extend(self, tokenizer, max_tokens: int, with_tips: bool) -> Rendered | None:
        """The chained prompt, or None where the chain breaks (see the module docstring)."""
        n = len(self.messages)
        last = self._last.get(with_tips)
        if (self.history_tokens != "sampled" or not self.instruction_every_turn or self.history != "chat"
                or last is None or last[0] != n - 2 or n < 3 or last[1].too_long):
            return None
        reply, user = self.messages[-2], self.messages[-1]
        if reply.role != "assistant" or user.role != "user" or reply.token_ids is None:
            return None
        if with_tips and self.tips_scope == "current" and self.messages[-3].tips:
            return None  # the previous step's tips leave the history now
        ids = last[1].ids + reply.token_ids + turn_glue(tokenizer, self._user_text(user, with_tips, True), reply.token_ids)
        if len(ids) > max_tokens:
            return None
        return Rendered(ids, last[1].dropped_turns, False, chained=True)

    def _render_messages(self, tokenizer, max_tokens: int, with_tips: bool) -> Rendered:
        max_drop = 0 if self.history == "latest" else max(0, (len(self.messages) - 2) // 2)
        drop = 0
        while True:
            if drop == 1 and self.history_drop == "half":  # over the budget: make room for a chain
                drop = max(1, (max_drop + 1) // 2)
            text = tokenizer.apply_chat_template(
                self.chat(with_tips, drop), tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= max_tokens or drop >= max_drop:
                break
            drop += 1
        too_long = len(ids) > max_tokens
        return Rendered(ids[-max_tokens:] if too_long else ids, drop, too_long)

    def step_prompts(self, tokenizer, max_tokens: int, with_tips: bool, at: list[int]) -> list[Rendered]:
        """The prompts the conversation had when it held `at[k]` messages, in order, rendered the way
        a rollout renders them turn by turn (so the tip-free prompts chain like the rollout's)."""
        replay = Conversation(**self.settings())
        out = []
        for n in at:
            replay.messages = list(self.messages[:n])
            out.append(replay.render(tokenizer, max_tokens, with_tips))
        return out
