"""Run lifecycle: tags, archive and restore, delete, and a retention policy.

Tags live in `runs/<run_id>/tags.json`, next to the run and apart from it:
run.json is the immutable record of what was computed, while a run's role
(`baseline`, `experimental`, `archived`) changes as the work goes on.
Archiving only tags a run (it stays readable, and `ls` hides it unless
asked), so nothing is moved and no path changes under a user. Deleting is
the one destructive step: a baseline is protected unless forced.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UsageError
from .runs import TAGS, atomic_write_json, list_runs, read_tags, resolve_run_dir


def set_tags(run_id: str, runs_dir: Path, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> list[str]:
    """Add and remove tags of a run; returns its tags afterwards."""
    unknown = sorted((set(add) | set(remove)) - set(TAGS))
    if unknown:
        raise UsageError(f"unknown tag {', '.join(unknown)}: tags are {', '.join(TAGS)}")
    folder = resolve_run_dir(run_id, runs_dir)
    tags = [t for t in read_tags(folder) if t not in remove]
    tags += [t for t in add if t not in tags]
    if "baseline" in add and "experimental" in tags and "experimental" not in add:
        tags.remove("experimental")  # a run is one or the other
    if "experimental" in add and "baseline" in tags and "baseline" not in add:
        tags.remove("baseline")
    atomic_write_json(folder / "tags.json", json.dumps(sorted(tags)))
    return sorted(tags)


def archive(run_id: str, runs_dir: Path) -> list[str]:
    return set_tags(run_id, runs_dir, add=("archived",))


def restore(run_id: str, runs_dir: Path) -> list[str]:
    return set_tags(run_id, runs_dir, remove=("archived",))


def delete(run_id: str, runs_dir: Path, force: bool = False) -> str:
    """Remove a run's folder; a baseline only with force. Returns the id removed."""
    folder = resolve_run_dir(run_id, runs_dir)
    if "baseline" in read_tags(folder) and not force:
        raise UsageError(f"run {folder.name} is a baseline; untag it first or pass --force to delete it")
    shutil.rmtree(folder)
    return folder.name


@dataclass
class RetentionPlan:
    """What a retention policy would do: baselines are always kept."""

    archive: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"keep {len(self.keep)}, archive {len(self.archive)}, delete {len(self.delete)}"]
        lines += [f"  archive {i}" for i in self.archive] + [f"  delete  {i}" for i in self.delete]
        return "\n".join(lines)


def plan_retention(runs_dir: Path, keep_last: int, delete_archived: bool = False) -> RetentionPlan:
    """Per prompt (same canonical hash): keep baselines and the last `keep_last` other runs,
    archive the older ones; with `delete_archived`, runs already archived are deleted."""
    if keep_last < 0:
        raise UsageError("--keep-last must be 0 or more")
    plan = RetentionPlan()
    by_prompt: dict[str, list] = {}
    for s in list_runs(runs_dir):
        by_prompt.setdefault(s.prompt_sha256, []).append(s)
    for runs in by_prompt.values():
        live = [s for s in runs if "baseline" not in s.tags and "archived" not in s.tags]
        old = {s.run_id for s in live[: max(0, len(live) - keep_last)]}  # oldest first
        for s in runs:
            if "baseline" in s.tags:
                plan.keep.append(s.run_id)
            elif "archived" in s.tags:
                (plan.delete if delete_archived else plan.keep).append(s.run_id)
            elif s.run_id in old:
                plan.archive.append(s.run_id)
            else:
                plan.keep.append(s.run_id)
    return plan


def apply_retention(plan: RetentionPlan, runs_dir: Path) -> None:
    for run_id in plan.archive:
        archive(run_id, runs_dir)
    for run_id in plan.delete:
        delete(run_id, runs_dir)
