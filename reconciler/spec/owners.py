"""Map owners: ``mapownerselector`` (program kinds) and ``mapOwnerSelector`` (applications).

A manifest that selects a map owner loads its programs with the owner's maps instead of its own.
The selector is a label selector over the other manifests' ``metadata.labels`` and must select
exactly one manifest. Resolving it needs only the manifests, never the host, so it is part of
``load_manifests``.

Where the shared maps live (relative to the bpffs root):

- an application's programs always share ``<Kind>/<name>/maps``;
- a program kind that is a map owner pins the maps of its one attachment in ``<Kind>/<name>/maps``
  as well, so a program kind can be a map owner only if it has exactly one attachment;
- a manifest that has a map owner uses its owner's maps directory (following the owner's own map
  owner, if it has one).
"""

from __future__ import annotations

from reconciler.spec.model import Manifest, Problem
from reconciler.spec.programs import (
    is_application,
    programs_of,
    spec_keys,
    static_attachment_count,
)
from reconciler.spec.selector import LabelSelector

# bpfman-operator labels everything it creates for a manifest with the manifest's name, and its
# map-sharing examples select owners by it; a host gives every manifest the same label (unless
# the manifest sets it), so those selectors work unchanged.
OWNED_BY = "bpfman.io/ownedByProgram"


def labels_of(name: str, labels: dict[str, str]) -> dict[str, str]:
    """The labels selectors see: ``labels`` and, unless set there, ``OWNED_BY: name``."""
    return labels if OWNED_BY in labels else {**labels, OWNED_BY: name}


def selector_of(m: Manifest) -> LabelSelector:
    return LabelSelector.parse(m.spec.get(spec_keys(m.kind)["mapownerselector"]))


def resolve(
    manifests: list[Manifest], invalid: dict[str, dict[str, str]] | None = None
) -> tuple[dict[str, str], list[Problem]]:
    """``{resource: its map owner's resource}`` for every manifest that selects one, and the
    problems: no match, several matches, itself, an owner with several attachments, cycles.

    ``invalid`` are the labels of manifests that have problems of their own (by resource): they
    still count as candidates, so that one broken manifest does not also make every selector
    that names it report "selects no manifest"."""
    invalid = invalid or {}
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    by_resource = {m.resource: m for m in manifests}
    for m in manifests:
        selector = selector_of(m)
        if selector.empty:
            continue
        field = f"spec.{spec_keys(m.kind)['mapownerselector']}"
        where = m.origin_of(field)
        if selector.matches(labels_of(m.name, m.labels)):
            problems.append(
                Problem(
                    where,
                    field,
                    f"selects this manifest itself (its labels match {selector}); a manifest "
                    "cannot share maps with itself: select the owner by a label this manifest "
                    "does not have",
                )
            )
            continue
        matches = [
            o for o in manifests if o is not m and selector.matches(labels_of(o.name, o.labels))
        ]
        broken = [r for r, labels in invalid.items() if selector.matches(labels)]
        if broken and len(matches) + len(broken) == 1:
            continue  # the owner's own problems are reported; nothing more to say here
        if not matches and not broken:
            problems.append(
                Problem(
                    where,
                    field,
                    f"selects no manifest: no manifest's metadata.labels match {selector}; the "
                    "map owner must be one of the manifests, labelled to match",
                )
            )
            continue
        if len(matches) + len(broken) > 1:
            listed = ", ".join([f"{o.resource} ({o.origin})" for o in matches] + broken)
            problems.append(
                Problem(
                    where,
                    field,
                    f"selects {len(matches) + len(broken)} manifests: {listed}; it must select "
                    "exactly one map "
                    "owner, so narrow it to a label only the owner has",
                )
            )
            continue
        owner = matches[0]
        count = _attachment_count(owner)
        if count is not None and count != 1:
            problems.append(
                Problem(
                    where,
                    field,
                    f"map owner {owner.resource} has {count} attachments; a program kind shares "
                    "the maps of exactly one attachment, so choose one: select a manifest with a "
                    "single attach point, or share through an application (BpfApplication or "
                    "ClusterBpfApplication), whose programs all use one set of maps",
                )
            )
            continue
        owners[m.resource] = owner.resource
    problems.extend(_cycles(owners, by_resource))
    return owners, problems


def _attachment_count(m: Manifest) -> int | None:
    """Attachments of a program kind (they do not depend on the host); None for applications,
    which share one maps directory however many attachments they have."""
    if is_application(m.kind):
        return None
    return sum(static_attachment_count(p) or 0 for p in programs_of(m.kind, m.spec))


def _cycles(owners: dict[str, str], by_resource: dict[str, Manifest]) -> list[Problem]:
    problems = []
    reported: set[str] = set()
    for start in owners:
        chain = [start]
        while chain[-1] in owners and owners[chain[-1]] not in chain:
            chain.append(owners[chain[-1]])
        if chain[-1] not in owners:
            continue  # the chain ends at a manifest that owns its maps
        loop = chain[chain.index(owners[chain[-1]]) :]
        if start not in loop or start in reported:
            continue
        reported.update(loop)
        shown = " -> ".join([*loop, loop[0]])
        for resource in loop:
            m = by_resource[resource]
            field = f"spec.{spec_keys(m.kind)['mapownerselector']}"
            problems.append(
                Problem(
                    m.origin_of(field),
                    field,
                    f"map owners form a cycle: {shown}; one of them must own its maps, so remove "
                    "its map owner selector",
                )
            )
    for resource in reported:
        owners.pop(resource, None)
    return problems


def maps_dir_of_application(m: Manifest) -> str:
    """The shared maps directory of a manifest: of an application, or of a map owner."""
    return f"{m.kind}/{m.name}/maps"
