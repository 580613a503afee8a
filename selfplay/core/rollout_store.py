"""A scored rollout saved before training (``rollouts/iter_N/``), so a run killed in training, sync, evaluation
or checkpointing resumes without generating again: generation is most of an iteration's time at real sizes.

``rollout.json`` holds the Batch's lists (ids, messages, directions, responses, texts, memory-replay rows) and
``scores.safetensors`` its K x K log-odds and K x m rewards, exactly as the judge returned them, so the resumed
iteration trains on the same numbers.  The directory is written with ``atomic_dir`` and removed once the
iteration's metrics line is written; a resumed run keeps only the one of the iteration it resumes at
(``drop_rollouts``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from selfplay.core.batch import Batch
from selfplay.core.checkpoint import atomic_dir

ROLLOUT_DIR = "rollouts"
_LISTS = ("uids", "prompt_ids", "prompts", "directions", "replay", "group", "response_ids", "texts", "reference")


def rollout_path(run_dir: str | Path, t: int) -> Path:
    return Path(run_dir) / ROLLOUT_DIR / f"iter_{t}"


def save_rollout(run_dir: str | Path, t: int, rollout: Batch) -> None:
    """Iteration t's generated and scored rollout, written atomically."""
    path = rollout_path(run_dir, t)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"scores.{i}": s.contiguous() for i, s in enumerate(rollout.scores)}
    tensors |= {f"rewards.{i}": r.contiguous() for i, r in enumerate(rollout.rewards)}
    with atomic_dir(path) as tmp:
        (tmp / "rollout.json").write_text(json.dumps({k: getattr(rollout, k) for k in _LISTS}))
        save_file(tensors, str(tmp / "scores.safetensors"))


def load_rollout(run_dir: str | Path, t: int, expected_uids: list[str]) -> Batch | None:
    """Iteration t's saved rollout, or None if there is none.  A rollout of other prompts than this
    iteration's (``expected_uids``) is an error: the run's prompts or settings changed under it."""
    path = rollout_path(run_dir, t)
    if not (path / "rollout.json").exists():
        return None
    plain = json.loads((path / "rollout.json").read_text())
    if plain["uids"] != expected_uids:
        raise ValueError(f"the saved rollout {path} is of other prompts than iteration {t}'s; remove it to "
                         "generate again")
    tensors = load_file(str(path / "scores.safetensors"))
    n = len(plain["uids"])
    scores = [tensors[f"scores.{i}"] for i in range(n) if f"scores.{i}" in tensors]
    rewards = [tensors[f"rewards.{i}"] for i in range(n) if f"rewards.{i}" in tensors]
    return Batch(plain["uids"], plain["prompt_ids"], plain["prompts"],
                 [tuple(d) for d in plain["directions"]] if plain["directions"] is not None else None,
                 scores, rewards, [tuple(r) for r in plain["replay"]], plain["group"], plain["response_ids"],
                 plain["texts"], reference=plain["reference"])


def drop_rollouts(run_dir: str | Path, keep: int | None = None) -> None:
    """Remove the saved rollouts (and leftovers of unfinished writes), all but iteration ``keep``'s."""
    root = Path(run_dir) / ROLLOUT_DIR
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if keep is None or entry.name != f"iter_{keep}":
            shutil.rmtree(entry)
