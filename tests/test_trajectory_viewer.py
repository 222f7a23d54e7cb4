"""The episode viewer: one page with every iteration and episode, tips shown, text escaped."""

import json

from empo2.trajectory_viewer import main, write_viewer


def test_viewer_shows_steps_and_tips_escaped(tmp_path):
    folder = tmp_path / "trajectories"
    folder.mkdir()
    ep = {"instance": "find/1", "mode": "on_policy_memory", "return": 100.0, "success": True, "advantage": 0.5,
          "first_observation": "You are in the hallway.", "tip": "look in the <attic> first",
          "steps": [{"action": "go to attic", "response": "go to attic", "observation": "You see a key.",
                     "reward": 0, "intrinsic": 1.0, "tips": ["the key is upstairs & old"], "prompt_tokens": 50}]}
    for rank in (0, 1):
        (folder / f"iter_00000.rank{rank}.jsonl").write_text(json.dumps(ep) + "\n")
    (folder / "iter_00001.jsonl").write_text(json.dumps({**ep, "steps": []}) + "\n")
    page = write_viewer(tmp_path).read_text()
    assert page.count("<details class='ep'>") == 3
    assert "iteration 0</b> · 2 episodes" in page and "iteration 1</b> · 1 episodes" in page
    assert "the key is upstairs &amp; old" in page and "look in the &lt;attic&gt; first" in page
    assert "go to attic" in page and "<attic>" not in page


def test_viewer_without_trajectories(tmp_path, capsys):
    assert write_viewer(tmp_path) is None
    assert main([str(tmp_path)]) == 1
