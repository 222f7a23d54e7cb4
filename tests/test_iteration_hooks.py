"""The iteration protocol: which callbacks take part, and a half-written one refused, not skipped."""

import lightning as L
import pytest

from empo2.iteration_hooks import IterationCallback, IterationHooks, TipRetriever, iteration_hooks


class Writer(IterationCallback):
    def on_rollout_scored(self, ctx, episodes):
        pass


class OldStyle(L.Callback):  # hooks by name only, as callbacks were written before the protocol
    def on_rollout_end(self, trainer, pl_module, episodes):
        pass


def test_protocol_members_are_taken_in_order_and_others_ignored():
    a, b, plain = Writer(), IterationCallback(), L.Callback()
    assert iteration_hooks([a, plain, b]) == [a, b]
    assert isinstance(a, IterationHooks) and not isinstance(plain, IterationHooks)


def test_a_callback_with_some_hooks_but_not_the_protocol_is_refused():
    with pytest.raises(TypeError, match="OldStyle defines on_rollout_end .* subclass empo2.iteration_hooks.IterationCallback"):
        iteration_hooks([Writer(), OldStyle()])


def test_tip_retriever_is_whatever_retrieves_tips():
    class Tips:
        def retrieve_tips(self, episodes):
            return [[] for _ in episodes]

    assert isinstance(Tips(), TipRetriever) and not isinstance(Writer(), TipRetriever)
