"""Two kernels (or a kernel and a script) on one entity: write only this kernel's changes.

A save from the notebook writes what this kernel changed since it last loaded
or saved (its baseline, version ``B``), on top of the branch head ``H``, with
``merge=True``: the store carries every other value over from ``H``, so another
writer's changes since ``B`` are kept, deletions included.

A name this kernel changed (or deleted) that the store also changed between the
version this kernel last knew it at and ``H`` is a conflict: writing it would
drop the other side. It is never resolved silently: an explicit ``%state save``
is refused (a UsageError naming the variables; ``--overwrite`` keeps this
kernel's values), an auto-checkpoint saves the rest and warns in one line. When
both sides made the same change (equal values), it is not a conflict.

``magics.behind`` remembers, per name, the version at which this kernel's value
last matched the store when that is older than the baseline: names another
writer changed that this kernel kept its older value of. Such a name is not
written unless this kernel changes it, and then it is checked against that
older version. Whether the store's value changed between two versions is read
from the stored forms (:func:`statekit.history_ops.changed_names`): nothing is
decoded, except the values of conflicting names, to see whether both sides agree.
``magics.ahead`` is the converse: names loaded from a version older than the head
(``%state load 3``), which the next save writes although the kernel did not change them.

A kernel that has not loaded or saved the entity in this session takes the head
it sees when auto-checkpoint is turned on as its base (version 0 when there is
none yet): what another kernel saves after that is theirs. Without auto, a first
explicit save has no base to compare with and writes what the kernel holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from .. import history_ops
from ..errors import StatekitError
from .changes import check, make_entry

if TYPE_CHECKING:
    from ..magics import StateMagics
    from ..snapshot import StateSnapshot
    from .saving import SaveRequest, _Plan


def changed_between(magics: StateMagics, a: int, b: int, names: set[str] | None) -> set[str] | None:
    """Names whose stored value differs between versions a and b; None when it cannot be told."""
    if a == b:
        return set()
    try:
        if a == 0:  # "before the first version": whatever b holds is new
            held = set(magics.store().get(magics.entity_id, b).names)
            return held if names is None else held & names
        return history_ops.changed_names(magics.store(), magics.entity_id, a, b, names)
    except StatekitError:  # a version expired or purged, or damaged: assume the worst
        return None


def reconcile(magics: StateMagics, request: SaveRequest, plan: _Plan, parent: StateSnapshot | None) -> None:
    """Find what another writer changed since this kernel's baseline, and the conflicts with this kernel's changes.

    Explicit saves raise UsageError on a conflict (unless ``--overwrite``); auto-checkpoint leaves the
    conflicting names out of this save and records them in ``plan.conflicts`` for the warning.
    """
    plan.theirs, plan.conflicts, plan.on_top, plan.synced = set(), {}, None, set()
    baseline = magics.baseline
    if not plan.valid or parent is None or baseline.version is None:
        return
    behind = magics.behind
    mine = set(plan.to_save) | plan.deleted | set(plan.dropped) | set(plan.code)
    groups: dict[int, set[str]] = {}
    for n in mine:
        groups.setdefault(behind.get(n, baseline.version), set()).add(n)
    clash: set[str] = set()
    for base, names in groups.items():
        found = changed_between(magics, base, parent.version, names)
        clash |= names if found is None else found
    if baseline.version != parent.version:
        plan.on_top = parent.version
        theirs = changed_between(magics, baseline.version, parent.version, None)
        plan.theirs = (theirs or set()) - mine
    if not clash:
        return
    plan.synced = _agreeing(magics, plan, clash, parent)
    for n in plan.synced:
        if n in plan.to_save:
            plan.fresh[n] = make_entry(plan.to_save.pop(n))
            plan.unchanged.append(n)
        plan.deleted.discard(n)
        plan.dropped.pop(n, None)
        plan.code.pop(n, None)
    clash -= plan.synced
    if not clash:
        return
    plan.conflicts = {n: behind.get(n, baseline.version) for n in sorted(clash)}
    if request.overwrite:
        return
    if request.mode != "auto":
        raise UsageError(conflict_text(plan.conflicts, parent.version, explicit=True))
    for n in clash:
        plan.to_save.pop(n, None)
        plan.deleted.discard(n)
        plan.dropped.pop(n, None)
        plan.code.pop(n, None)


def _agreeing(magics: StateMagics, plan: _Plan, clash: set[str], parent: StateSnapshot) -> set[str]:
    """The clashing names where both sides made the same change: deleted on both, or equal values."""
    same = {n for n in clash if (n in plan.deleted or n in plan.dropped or n in plan.code) and n not in parent.names}
    wanted = sorted(n for n in clash if n in plan.to_save and n in parent.names)
    if not wanted:
        return same
    try:
        theirs = magics.store().load(magics.entity_id, parent.version, names=wanted, include_expired=True)
    except StatekitError:
        return same
    for n in wanted:
        if n in theirs and not check(make_entry(theirs[n]), plan.to_save[n], True)[0]:
            same.add(n)
    return same


def conflict_text(conflicts: dict[str, int], head: int, *, explicit: bool) -> str:
    """One line: which names, since which versions, and the two ways out."""
    names = list(conflicts)
    bases = sorted(set(conflicts.values()))
    since = ", ".join(f"v{v}" if v else "auto-checkpoint was turned on" for v in bases)
    listed = ", ".join(names)
    what = "not saved" if explicit else "left out of this auto-save"
    return (f"{what}: {listed} also changed by another writer (head v{head}) since {since}, which this kernel "
            f"last loaded or saved; %state load {' '.join(names)} takes theirs, "
            f"%state save --overwrite {' '.join(names)} keeps yours")


def remember_behind(magics: StateMagics, plan: _Plan, old_version: int | None) -> dict[str, int]:
    """``magics.behind`` after a save: names this kernel wrote, deleted or synced are current; names another
    writer changed that this kernel kept its older value of, and unresolved conflicts, are behind."""
    behind: dict[str, int] = dict(magics.behind) if plan.valid else {}
    for n in [*plan.to_save, *plan.deleted, *plan.dropped, *plan.code, *plan.synced]:
        behind.pop(n, None)
    if old_version is not None:
        for n in plan.theirs:
            behind.setdefault(n, old_version)
    for n, base in plan.conflicts.items():
        if n not in plan.to_save and n not in plan.deleted:
            behind[n] = base
    return behind


def carried_note(plan: _Plan, old_version: int | None) -> str:
    """`` on top of v7 by another writer (this kernel had v5; kept its y)`` when the head had moved, else empty."""
    if plan.on_top is None:
        return ""
    kept = f"; kept its {', '.join(sorted(plan.theirs)[:12])}" if plan.theirs else ""
    had = f"v{old_version}" if old_version else "nothing yet"
    return f" on top of v{plan.on_top} by another writer (this kernel had {had}{kept})"

def rebase(magics: StateMagics, version: int) -> None:
    """The namespace now continues from ``version`` (``%state branch NAME -f VERSION``): whatever it holds
    that differs from that version is this kernel's change, written by the next save."""
    b = magics.baseline
    if b.entity != magics.entity_id or b.version is None or b.version == version:
        return
    groups: dict[int, set[str]] = {}
    for n in b.entries:
        groups.setdefault(magics.behind.get(n, b.version), set()).add(n)
    for base, names in groups.items():
        differ = changed_between(magics, base, version, names)
        magics.ahead |= names if differ is None else differ
    magics.behind = {}
    b.version = version
