"""Three-way merge of decoded JSON: the app's changes applied to the file as it is now."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .locate import KeyPath, render_path


class _Missing:
    """The value at a key path that does not exist (a deleted or never written key)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

# Says whether the value at a key path is merged as one piece instead of key by key: for
# objects whose keys can be spelled several ways for the same meaning (llama-server flags
# are "ctx-size" or "--ctx-size"), where merging key by key could write a flag twice.
Atomic = Callable[[KeyPath], bool]


def _never(_path: KeyPath) -> bool:
    return False


@dataclass(frozen=True)
class Change:
    """One key set to a value, or removed (value is MISSING)."""

    path: KeyPath
    value: Any


class MergeConflict(Exception):
    """Both sides changed the same keys to different values; nothing was merged."""

    def __init__(self, paths: Sequence[KeyPath]) -> None:
        self.paths = tuple(paths)
        super().__init__(", ".join(render_path(path) for path in self.paths))


def same(a: Any, b: Any) -> bool:
    """JSON equality: key order does not count, but true is not 1 (Python says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | list) or isinstance(b, Mapping | list):
        return False
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def lookup(data: Any, path: KeyPath) -> Any:
    """The value at `path`, or MISSING when a key on the way is absent or not an object."""
    node = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return MISSING
        node = node[key]
    return node


def changes(before: Any, after: Any, *, atomic: Atomic = _never) -> list[Change]:
    """What turns `before` into `after`, key by key (lists and other values are whole)."""
    found: list[Change] = []
    _diff(before, after, (), atomic, found)
    return found


def _diff(before: Any, after: Any, path: KeyPath, atomic: Atomic, found: list[Change]) -> None:
    if same(before, after):
        return
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)) or atomic(path):
        found.append(Change(path, after))
        return
    for key in before:
        if key not in after:
            found.append(Change((*path, key), MISSING))
    for key, value in after.items():
        if key in before:
            _diff(before[key], value, (*path, key), atomic, found)
        else:
            found.append(Change((*path, key), value))


def apply(data: Any, to_apply: Iterable[Change]) -> Any:
    """A copy of `data` with the changes made; keys keep their place, new ones go last."""
    result = copy.deepcopy(data)
    for change in to_apply:
        if not change.path:
            result = copy.deepcopy(change.value)
            continue
        *parents, last = change.path
        if not isinstance(result, dict):
            if change.value is MISSING:
                continue
            result = {}  # like a parent below: setting a key makes the object it needs
        node = result
        for key in parents:
            child = node.get(key) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                if change.value is MISSING:
                    break  # removing a key whose parent is gone: nothing to do
                child = {}
                node[key] = child
            node = child
        else:
            if change.value is MISSING:
                node.pop(last, None)
            else:
                node[last] = copy.deepcopy(change.value)
    return result


def merge(base: Any, ours: Any, theirs: Any, *, atomic: Atomic = _never,
          normal_forms: tuple[Any, Any, Any] | None = None) -> Any:
    """`theirs` with the changes `ours` made to `base`; raises MergeConflict where both
    sides changed the same key to different values.

    A key changed only in `theirs` keeps their value, one changed only in `ours` gets ours,
    the same change on both sides is no conflict. `normal_forms` are base, ours and theirs
    in a form where the same meaning is the same data (a duration as "10m" or 600, a
    default left out or written): whether `theirs` changed a key, and whether to the same
    value as `ours`, is judged there, while the changes themselves are found and made as
    written, so every key `ours` did not change keeps the spelling `theirs` gives it.
    """
    base_n, ours_n, theirs_n = normal_forms or (base, ours, theirs)
    accepted: list[Change] = []
    conflicts: list[KeyPath] = []
    for change in changes(base, ours, atomic=atomic):
        now = lookup(theirs_n, change.path)
        was = lookup(base_n, change.path)
        wanted = lookup(ours_n, change.path)
        if _same_value(now, was):
            accepted.append(change)  # theirs left the key alone
        elif _same_value(wanted, was) or _same_value(wanted, now):
            continue  # ours only spelled it anew, or made the same change: theirs stays
        else:
            conflicts.append(change.path)
    if conflicts:
        raise MergeConflict(conflicts)
    return apply(theirs, accepted)


def _same_value(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return same(a, b)
