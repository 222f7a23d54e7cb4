"""Tips built from the episode's own record, without the model (`memory.tip_source: trace`).

Why: EMPO²'s tips are written by the policy (EMPO2.md §3.3). A 135M model writes off-topic text, so
a run at that scale cannot tell whether the memory mechanism helps or only whether this model's
tips do. A trace tip states what the episode itself showed, by fixed rules a reader can check by
hand: the actions that raised the score and by how much, the actions that lost points (a wrong
commit: ScienceWorld's and KeyRoom's wrong `focus on` costs 100), and the final score. It is our
ablation for models too small to write useful tips, never the default: the paper's tip is the
model's.
"""

from __future__ import annotations

from empo2.episode import Episode


def _points(reward: float) -> str:
    return f"{reward:+g}"


def trace_tip(ep: Episode) -> str:
    """The tip of `ep` by these rules, in this order:
    - "Final score S." — S is the last step's `info["score"]` where the environment reports one, else
      the episode's extrinsic return;
    - "Scored: a (+r); ..." — every step whose reward was above 0, in the order played (an action
      repeated counts each time it scored);
    - "Lost points: a (−r); ..." — every step whose reward was below 0;
    - "No action changed the score in N steps." — when no step's reward was other than 0.
    Rewards are the environment's per-step rewards (format penalties included), not the novelty
    bonus. An episode with no steps gets ""."""
    if not ep.steps:
        return ""
    score = next((float(s.info["score"]) for s in reversed(ep.steps) if "score" in s.info), ep.extrinsic_return)
    parts = [f"Final score {score:g}."]
    scored = [f"{s.action} ({_points(s.reward)})" for s in ep.steps if s.reward > 0]
    lost = [f"{s.action} ({_points(s.reward)})" for s in ep.steps if s.reward < 0]
    if scored:
        parts.append("Scored: " + "; ".join(scored) + ".")
    if lost:
        parts.append("Lost points: " + "; ".join(lost) + ".")
    if not scored and not lost:
        parts.append(f"No action changed the score in {len(ep.steps)} steps.")
    return " ".join(parts)
