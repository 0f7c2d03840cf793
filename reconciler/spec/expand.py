"""Expand validated manifests into one DesiredAttachment per attach point, for one host.

This is the host-dependent step of the spec layer. It asks :class:`HostFacts` (lazily, each fact
once) for the host's labels (node selection), the interface of the default route
(``primarynodeinterface``), the interfaces of a network namespace (interface discovery) and where
a library is (uprobe targets given by name); everything else was settled by ``load_manifests``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from reconciler import files
from reconciler.address import Address
from reconciler.kernel.types import ProgramSpec
from reconciler.kinds import Target, sections
from reconciler.spec.elf import ElfError, ElfObject, read_bpf_object
from reconciler.spec.host import HostError, HostFacts
from reconciler.spec.loader import FieldPath, format_path, source_base
from reconciler.spec.model import (
    PRUNE_ANNOTATION,
    PRUNE_ATTRIBUTE,
    DesiredAttachment,
    DesiredState,
    Manifest,
    ManifestError,
    Origin,
    Problem,
)
from reconciler.spec.owners import maps_dir_of_application
from reconciler.spec.programs import LinkSpec, Program, is_application, programs_of, spec_keys
from reconciler.spec.selector import LabelSelector
from reconciler.spec.semantic import allowed_regex, object_problems, resolve_bytecode
from reconciler.values import frozen

T = TypeVar("T")


@frozen
class _LinkHost:
    """The host as one link's kind may ask it (:class:`reconciler.kinds.Resolver`): each
    question is the expander's, and what cannot be answered is reported against the link."""

    expander: _Expander
    manifest: Manifest
    link: LinkSpec

    def interfaces(self, netns: str | None) -> list[str]:
        return self.expander.interfaces(self.manifest, self.link, netns)

    def library(self, container_pid: int | None = None) -> str | None:
        return self.expander.library(self.manifest, self.link, container_pid)

    def containers(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        return self.expander.containers(self.manifest, self.link, selector)

    def xdp_mode(self, ifname: str, netns: str | None) -> str | None:
        return self.expander.host_xdp_mode(ifname, netns)


class _Expander:
    def __init__(self, root: Path, host: HostFacts) -> None:
        self.base = source_base(root)
        self.host = host
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._digests: dict[Path, str] = {}
        self._resolved: dict[Path, Path] = {}  # bytecode as written -> the file it names
        self._shown: dict[Path, str] = {}
        self._image_objects: dict[Path, ElfObject] = {}
        self.problems: list[Problem] = []

    # --- host facts, each asked once

    def _ask(self, key: tuple[Any, ...], question: Callable[[], T]) -> T | HostError:
        if key not in self._cache:
            try:
                self._cache[key] = question()
            except HostError as e:
                self._cache[key] = e
        return self._cache[key]

    def labels(self) -> dict[str, str]:
        labels = self._ask(("labels",), self.host.labels)
        if isinstance(labels, HostError):  # not about one manifest: nothing can be selected
            if labels.source:  # the labels file is wrong: the host's problem, not a manifest's
                raise labels
            raise ManifestError([str(labels)])
        return labels

    def host_xdp_mode(self, ifname: str, netns: str | None) -> str | None:
        """The interface's XDP mode from the host's config, if it names one."""
        mode = self._ask(("xdp_mode", ifname, netns), lambda: self.host.xdp_mode(ifname, netns))
        if isinstance(mode, HostError):
            if mode.source:  # the host config is wrong
                raise mode
            raise ManifestError([str(mode)])
        return mode

    def _problem(self, m: Manifest, path: FieldPath, message: str) -> None:
        text = format_path(path)
        self.problems.append(Problem(m.origin_of(text), text, message))

    # --- selection

    def unselected_reason(self, m: Manifest) -> str | None:
        selector = LabelSelector.parse(m.spec.get(spec_keys(m.kind)["nodeselector"]))
        if selector.empty:
            return None
        failures = selector.failures(self.labels())
        return "; ".join(failures) if failures else None

    # --- expansion

    def digest(self, path: Path) -> str:
        if path not in self._digests:
            h = hashlib.sha256()
            with files.open_regular(path) as f:  # validated, but it may have been swapped
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._digests[path] = f"sha256:{h.hexdigest()}"
        return self._digests[path]

    def _image(self, m: Manifest, field: str, image: dict[str, Any]) -> tuple[Path, str] | None:
        """(the image's ELF object, the digest its reference resolved to), the object checked as
        a path's is when manifests are loaded; None after reporting a problem."""
        app = is_application(m.kind)
        url: str = image["url"]
        policy = image.get("imagePullPolicy" if app else "imagepullpolicy") or "IfNotPresent"
        secret = (image.get("imagePullSecret" if app else "imagepullsecret") or {}).get("name")
        where = ("spec", field, "image", "url")
        answer = self._ask(
            ("image", url, policy, secret), lambda: self.host.bytecode_image(url, policy, secret)
        )
        if isinstance(answer, HostError):
            if answer.source:  # the host config is wrong
                raise answer
            self._problem(m, where, str(answer))
            return None
        obj_path = Path(answer["object"])
        obj = self._image_objects.get(obj_path)
        if obj is None:
            try:
                obj = self._image_objects[obj_path] = read_bpf_object(obj_path)
            except ElfError as e:
                self._problem(m, where, f"{url}: {e}")
                return None
        problems = object_problems(m.kind, m.spec, obj, url)
        listed = answer.get("programs") or {}
        for program in programs_of(m.kind, m.spec):
            if listed and program.function not in listed:
                problems.append(
                    (
                        program.function_path,
                        f"function {program.function!r} is not among the programs the labels of "
                        f"{url} list ({', '.join(sorted(listed))}); is this the right image?",
                    )
                )
            elif listed:
                said = str(listed[program.function])
                # By family, as sections are: tc and tcx both label a TC classifier. Types
                # outside the families (cgroup_skb, ...) must name the kind's own type.
                family = sections.label_family(said)
                if family is not None:
                    mismatch = family != program.kind.sections.family
                else:
                    names = {_plain(n) for a in program.kind.app_types for n in (a.name, a.member)}
                    mismatch = _plain(said) not in names
                if mismatch:
                    problems.append(
                        (
                            program.function_path,
                            f"the labels of {url} say {program.function!r} is a {said} program, "
                            f"not {program.kind.a_name}; is this the right image?",
                        )
                    )
        for path, message in problems:
            self._problem(m, path, message)
        if problems:
            return None
        return obj_path, str(answer["digest"])

    def expand(self, m: Manifest) -> list[DesiredAttachment]:
        field = spec_keys(m.kind)["bytecode"]
        image = m.spec[field].get("image")
        extra: dict[str, Any] = {}
        if image is not None:
            pulled = self._image(m, field, image)
            if pulled is None:
                return []
            resolved, extra["image_digest"] = pulled
            shown = image["url"]
            try:
                digest = self.digest(resolved)
            except OSError as e:  # the cache changed under us
                self._problem(m, ("spec", field, "image", "url"), f"{shown}: {e}")
                return []
        else:
            written: str = m.spec[field]["path"]
            located = resolve_bytecode(self.base / m.origin.file, written)
            try:
                known = self._resolved.get(located)
                if known is None:  # once per object and directory, however many name it
                    known = self._resolved[located] = located.resolve(strict=True)
                resolved = known
                digest = self.digest(resolved)
            except OSError as e:  # removed or made unreadable since load_manifests() checked it
                self._problem(
                    m,
                    ("spec", field, "path"),
                    f"cannot read bytecode file {located}: {e.strerror or e}",
                )
                return []
            shown = self._shown.get(located)
            if shown is None:
                shown = written if os.path.isabs(written) else _relative(located, self.base)
                self._shown[located] = shown
        global_data = {name: value.hex() for name, value in m.global_data} or None
        out = []
        disabled = m.annotations.get(PRUNE_ANNOTATION) == "disabled"
        keep = {PRUNE_ATTRIBUTE: "disabled"} if disabled else {}
        for program in programs_of(m.kind, m.spec):
            spec = ProgramSpec(
                str(resolved), program.function, program.prog_type, global_data=m.global_data
            )
            common = {
                "bytecode": shown,
                "bytecode_digest": digest,
                **extra,
                "function": program.function,
            }
            for link in program.links:
                origin = m.origin_of(format_path(link.path)) if program.in_application else m.origin
                for point in self.points(m, program, link):
                    out.append(
                        DesiredAttachment(
                            address=Address(m.kind, m.name, program.index_prefix + point.index),
                            origin=origin,
                            program=spec,
                            point=point.point,
                            bytecode_digest=digest,
                            priority=link.values.get("priority"),
                            proceedon=tuple(link.values.get("proceedon", ())),
                            attributes={
                                **common,
                                **point.attributes,
                                "global_data": dict(global_data) if global_data else None,
                                "map_owner": m.map_owner,
                                **keep,
                            },
                        )
                    )
        return out

    def points(self, m: Manifest, program: Program, link: LinkSpec) -> list[Target]:
        return program.kind.targets(link.values, _LinkHost(self, m, link))

    def interfaces(self, m: Manifest, link: LinkSpec, netns: str | None) -> list[str]:
        v = link.values
        if v["interfaces"] is not None:
            return list(v["interfaces"])
        if v["primary"]:
            primary = self._ask(("primary",), self.host.primary_interface)
            if isinstance(primary, HostError):
                self._problem(m, link.where("primary"), str(primary))
                return []
            if primary is None:
                example = (
                    "interfaceSelector: {interfaces: [eth0]}"
                    if is_application(m.kind)
                    else "interfaceselector: {interfaces: [eth0]}"
                )
                self._problem(
                    m,
                    link.where("primary"),
                    "no default route on this host, so there is no primary interface to attach "
                    f"to; name the interfaces instead: {example}",
                )
                return []
            return [primary]
        found = self._ask(("interfaces", netns), lambda: self.host.interfaces(netns))
        if isinstance(found, HostError):
            self._problem(m, link.where("netns" if netns else "discovery"), str(found))
            return []
        return discover(found, v["discovery"]["allowed"], v["discovery"]["exclude"])

    def containers(
        self, m: Manifest, link: LinkSpec, selector: dict[str, Any]
    ) -> list[dict[str, Any]]:
        key = ("containers", repr(sorted(selector.items())))
        found = self._ask(key, lambda: self.host.containers(selector))
        if isinstance(found, HostError):
            if found.source:  # the host config is wrong
                raise found
            self._problem(m, link.where("containers"), str(found))
            return []
        return found

    def library(self, m: Manifest, link: LinkSpec, pid: int | None) -> str | None:
        name: str = link.values["target"]
        found = self._ask(("library", name, pid), lambda: self.host.resolve_library(name, pid))
        where = f"in the mount namespace of process {pid}" if pid else "on this host"
        if isinstance(found, HostError):
            self._problem(m, link.where("target"), str(found))
            return None
        if found is None:
            self._problem(
                m,
                link.where("target"),
                f"library {name!r} is not found {where}: the dynamic loader's cache "
                "(ld.so.cache) and library directories have no such library; install it, or give "
                "target as an absolute path",
            )
        return found


def discover(found: list[str], allowed: list[str], exclude: list[str]) -> list[str]:
    """Interface discovery as bpfman-operator does it: every interface except the excluded
    (exact names), and, when ``allowed`` is not empty, only those matching one of its entries
    (an exact name, or ``/REGEX/`` searched anywhere in the name)."""
    exact: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for entry in allowed:
        regex = allowed_regex(entry)
        if regex is None:
            exact.add(entry.strip(" "))
        elif not isinstance(regex, str):  # invalid ones were refused by load_manifests
            patterns.append(regex)
    return [
        name
        for name in found
        if name not in exclude
        and (not allowed or name in exact or any(p.search(name) for p in patterns))
    ]


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the source root, lexically (symlinks kept as the user wrote them)."""
    return os.path.relpath(os.path.normpath(os.path.abspath(path)), os.path.abspath(base))


def expand_manifests(manifests: list[Manifest], root: Path, host: HostFacts) -> DesiredState:
    expander = _Expander(root, host)
    selected: list[Manifest] = []
    unselected: list[tuple[Manifest, str]] = []
    for m in manifests:
        reason = expander.unselected_reason(m)
        if reason is None:
            selected.append(m)
        else:
            unselected.append((m, reason))
    by_manifest = {m.resource: expander.expand(m) for m in selected}
    attachments = _share_maps(selected, manifests, unselected, by_manifest, expander)
    _check_unique(attachments, expander)
    if expander.problems:
        ordered = sorted(expander.problems, key=lambda p: (p.origin.file, p.origin.line))
        raise ManifestError(list(dict.fromkeys(str(p) for p in ordered)))
    return DesiredState(manifests, attachments, source=str(root), unselected=unselected)


def _share_maps(
    selected: list[Manifest],
    manifests: list[Manifest],
    unselected: list[tuple[Manifest, str]],
    by_manifest: dict[str, list[DesiredAttachment]],
    expander: _Expander,
) -> list[DesiredAttachment]:
    """Set ``maps_dir`` and ``depends_on``: an application's programs share its maps directory, a
    map owner pins its maps where its users find them, and a user loads after its owner."""
    by_resource = {m.resource: m for m in manifests}
    why_not = {m.resource: reason for m, reason in unselected}
    owners = {m.map_owner for m in manifests if m.map_owner}

    def own_dir(m: Manifest) -> str | None:
        if is_application(m.kind):
            return maps_dir_of_application(m)
        attachments = by_manifest.get(m.resource, [])
        if m.resource in owners and len(attachments) == 1:
            # Beside the attachment, not inside it: the owner's pins can then be replaced or
            # removed without touching the maps its users hold.
            return maps_dir_of_application(m)
        return None

    def maps_dir(m: Manifest, seen: tuple[str, ...] = ()) -> str | None:
        owner = by_resource.get(m.map_owner) if m.map_owner else None
        if owner is None or owner.resource in seen:  # cycles are refused by load_manifests
            return own_dir(m)
        return maps_dir(owner, (*seen, m.resource))

    out = []
    for m in selected:
        attachments = by_manifest[m.resource]
        depends_on: tuple[Address, ...] = ()
        if m.map_owner:
            field = f"spec.{spec_keys(m.kind)['mapownerselector']}"
            if m.map_owner in why_not:
                expander.problems.append(
                    Problem(
                        m.origin_of(field),
                        field,
                        f"map owner {m.map_owner} is not selected on this host "
                        f"({why_not[m.map_owner]}), so there are no maps to share; give this "
                        "manifest the same node selector as its owner",
                    )
                )
                continue
            if m.map_owner not in by_resource:
                expander.problems.append(
                    Problem(
                        m.origin_of(field),
                        field,
                        f"map owner {m.map_owner} is not among the manifests being expanded",
                    )
                )
                continue
            depends_on = tuple(a.address for a in by_manifest.get(m.map_owner, []))
        directory = maps_dir(m)
        for a in attachments:
            program = dataclasses.replace(a.program, maps_dir=directory)
            out.append(dataclasses.replace(a, program=program, depends_on=depends_on))
    return out


def _check_unique(attachments: list[DesiredAttachment], expander: _Expander) -> None:
    first: dict[Address, Origin] = {}
    for a in attachments:
        if a.address in first:
            expander.problems.append(
                Problem(
                    a.origin,
                    "",
                    f"{a.address} is asked for twice (also at {first[a.address]}); a program "
                    "attaches to each attach point once, so remove one of the links",
                )
            )
        else:
            first[a.address] = a.origin


def _plain(type_name: str) -> str:
    """A program type name as labels and manifests write it, compared loosely (TracePoint,
    tracepoint, cgroup_skb, cgroupSkb)."""
    return type_name.lower().replace("_", "")
