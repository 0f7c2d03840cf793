"""The components of a dispatcher revision: one model for the XDP and the TC dispatcher (and
the order the fake's dispatchers follow).

A dispatch makes a hook run exactly the given programs plus the foreign ones found on its
dispatcher, in one swap to a new dispatcher revision. Each slot of that revision is a
``Component``: one of ours (``pin_dir``, loaded from ``spec``) or a foreign program, kept at its
priority and chain actions. Run order: lower priority first; ties by pin dir for ours, by
program name for foreign ones (as libxdp breaks ties by name).

Which of ours keep their program ids: a component whose pin dir holds the program loaded from
the very spec wanted now is linked into the new revision as it is (``prog_id`` set); any other
is loaded anew against the new dispatcher (``prog_id`` None). What a program was loaded from is
its spec's ``mark`` (``%spec-<digest>``) in its pin dir: the XDP dispatcher pins the program
there too, the TC dispatcher leaves an empty directory (see each dispatcher for why).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.kernel.pins import SPEC_MARK
from reconciler.kernel.types import ProgramSpec


@dataclass(frozen=True)
class Component:
    """One slot of a dispatcher revision (or of the one a hook runs now)."""

    priority: int
    proceed: int  # the dispatcher's chain-call bitmask, in that dispatcher's encoding
    name: str  # the program's name (orders foreign ties)
    pin_dir: str | None = None  # ours; None: foreign
    prog_id: int | None = None  # the loaded program it runs (kept, or foreign); None: load anew
    flags: int = 0  # libxdp's program flags (kept for a foreign XDP program)
    spec: ProgramSpec | None = None  # ours: what it is loaded from
    mark: str = ""  # ours: ``mark(spec)``

    def order(self) -> tuple[int, str]:
        return (self.priority, self.pin_dir if self.pin_dir is not None else self.name)

    @property
    def loads(self) -> bool:
        """Whether the new revision loads this component's program (it keeps no id)."""
        return self.prog_id is None


def spec_digest(spec: ProgramSpec, objects: dict[str, bytes] | None = None) -> str:
    """What a component is loaded from: the object's bytes, the function, the program type, the
    global data and the shared maps directory. ``objects`` remembers the object files' digests
    for one dispatch, whose slots often load the same file."""
    digest = None if objects is None else objects.get(spec.object_path)
    if digest is None:
        with open(spec.object_path, "rb") as f:
            digest = hashlib.sha256(f.read()).digest()
        if objects is not None:
            objects[spec.object_path] = digest
    h = hashlib.sha256(digest)
    h.update(repr((spec.function, spec.prog_type.value, spec.global_data, spec.maps_dir)).encode())
    return h.hexdigest()[:32]


def mark(spec: ProgramSpec, objects: dict[str, bytes] | None = None) -> str:
    return SPEC_MARK + spec_digest(spec, objects)


def revision(ours: Iterable[Component], foreign: Iterable[Component]) -> list[Component]:
    """The new revision's components, in run order."""
    return sorted([*foreign, *ours], key=Component.order)


def unchanged(now: Sequence[Component], wanted: Sequence[Component]) -> bool:
    """Whether the hook already runs ``wanted``: the same programs, priorities and actions."""
    return [(c.prog_id, c.priority, c.proceed) for c in now] == [
        (c.prog_id, c.priority, c.proceed) for c in wanted
    ]
