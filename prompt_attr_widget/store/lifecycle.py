"""Run lifecycle: tags, archive and restore, delete, and a retention policy.

Tags live in `runs/<run_id>/tags.json`, next to the run and apart from it:
run.json is the immutable record of what was computed, while a run's role
(`baseline`, `experimental`, `archived`) changes as the work goes on.
Archiving only tags a run (it stays readable, and `ls` hides it unless
asked), so nothing is moved and no path changes under a user. Deleting is
the one destructive step: a baseline is protected unless forced.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import PromptAttrError, RunBusy, RunNotFound, UsageError
from .runs import (
    TAGS,
    atomic_write_json,
    is_live,
    list_runs,
    read_tags,
    resolve_run_dir,
    writer_lock,
)


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
    # Archiving hides a run (and prune --delete-archived deletes it): never one being written.
    with writer_lock(folder, "archive") if "archived" in add else contextlib.nullcontext():
        try:
            atomic_write_json(folder / "tags.json", json.dumps(sorted(tags)))
        except OSError as exc:
            raise PromptAttrError(
                f"cannot write the tags of run {folder.name} ({folder / 'tags.json'}): {exc.strerror or exc}; "
                "fix the folder (a tags.json that is not a file, its permissions, a full disk) and try again"
            ) from None
    return sorted(tags)


def archive(run_id: str, runs_dir: Path) -> list[str]:
    return set_tags(run_id, runs_dir, add=("archived",))


def restore(run_id: str, runs_dir: Path) -> list[str]:
    return set_tags(run_id, runs_dir, remove=("archived",))


def delete(run_id: str, runs_dir: Path, force: bool = False) -> str:
    """Remove a run's folder; a baseline only with force; never a run being written
    (RunBusy: its process would go on paying for a run that no longer exists).
    Returns the id removed."""
    folder = resolve_run_dir(run_id, runs_dir)
    with writer_lock(folder, "delete"):  # held while removing: no resume can start meanwhile
        if "baseline" in read_tags(folder) and not force:
            raise UsageError(f"run {folder.name} is a baseline; untag it first or pass --force to delete it")
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise PromptAttrError(
                f"cannot delete {exc.filename or folder}: {exc.strerror or exc}; fix its permissions and delete it again"
            ) from None
    return folder.name


@dataclass
class RetentionPlan:
    """What a retention policy would do: baselines are always kept, runs being written skipped."""

    archive: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)  # being written by another process: left alone

    def __str__(self) -> str:
        counts = f"keep {len(self.keep)}, archive {len(self.archive)}, delete {len(self.delete)}"
        lines = [counts + (f", skip {len(self.skip)}" if self.skip else "")]
        lines += [f"  archive {i}" for i in self.archive] + [f"  delete  {i}" for i in self.delete]
        lines += [f"  skip    {i} (being written by another process; prune again once it ends)" for i in self.skip]
        return "\n".join(lines)


def plan_retention(runs_dir: Path, keep_last: int, delete_archived: bool = False) -> RetentionPlan:
    """Per prompt (same canonical hash): keep baselines and the last `keep_last` other runs,
    archive the older ones; with `delete_archived`, runs already archived are deleted.
    Empty run folders (a run that never started) are deleted; runs being written are skipped."""
    if keep_last < 0:
        raise UsageError("--keep-last must be 0 or more")
    plan = RetentionPlan()
    by_prompt: dict[str, list] = {}
    for s in list_runs(runs_dir):
        if is_live(Path(runs_dir) / s.run_id):
            plan.skip.append(s.run_id)
        elif s.status == "empty":
            plan.delete.append(s.run_id)  # a run that never started: nothing in it to keep
        else:
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


def apply_retention(plan: RetentionPlan, runs_dir: Path) -> list[str]:
    """Carry out a plan; returns the runs skipped because a process began writing (or removed)
    them after the plan was made."""
    skipped = []
    for change, run_ids in ((archive, plan.archive), (delete, plan.delete)):
        for run_id in run_ids:
            try:
                change(run_id, runs_dir)
            except (RunBusy, RunNotFound):
                skipped.append(run_id)
    return skipped
