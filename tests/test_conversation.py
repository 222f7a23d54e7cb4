"""Conversation rendering: exact tip removal, the transient instruction, the prompt budget."""

from empo2.conversation import TIP_HEADER, Conversation


def _conv(tips=True, every_turn=True):
    c = Conversation(instruction="One action, one line.", instruction_every_turn=every_turn)
    c.add_user("You are in the hallway.", tips=["try the kitchen"] if tips else None)
    c.add_assistant("go to kitchen")
    c.add_user("You are in the kitchen.", tips=["focus on the apple", "the garden is empty"] if tips else None)
    return c


def test_tip_removal_is_exact_at_token_level(tokenizer):
    with_tips = _conv(tips=True)
    without = _conv(tips=False)
    assert with_tips.render(tokenizer, 4096, with_tips=False).ids == without.render(tokenizer, 4096).ids
    rendered = tokenizer.decode(with_tips.render(tokenizer, 4096).ids)
    assert rendered.count(TIP_HEADER) == 2 and "<tip>focus on the apple</tip>" in rendered
    assert with_tips.render(tokenizer, 4096).ids != without.render(tokenizer, 4096).ids


def test_instruction_on_every_turn_or_only_the_latest():
    chat = _conv(every_turn=False).chat()
    assert chat[-1]["content"].endswith("One action, one line.")
    assert "One action" not in chat[0]["content"]
    assert [m["role"] for m in chat] == ["user", "assistant", "user"]
    chat = _conv().chat()  # the default keeps it in the history, where prompts chain
    assert chat[0]["content"].endswith("One action, one line.") and chat[-1]["content"].endswith("One action, one line.")


def test_budget_drops_oldest_turns_but_keeps_the_task(tokenizer):
    c = Conversation()
    c.add_user("TASK: find the key.")
    for i in range(30):
        c.add_assistant(f"go to room {i}")
        c.add_user(f"You are in room {i}. " + "There is dust everywhere. " * 5)
    full = c.render(tokenizer, 100_000)
    assert full.dropped_turns == 0
    short = c.render(tokenizer, len(full.ids) // 3)
    assert short.dropped_turns > 0 and not short.too_long and len(short.ids) <= len(full.ids) // 3
    text = tokenizer.decode(short.ids)
    assert "TASK: find the key." in text and "room 29" in text and "room 0." not in text
    tiny = c.render(tokenizer, 10)
    assert tiny.too_long and len(tiny.ids) == 10
