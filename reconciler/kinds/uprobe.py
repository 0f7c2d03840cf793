"""UprobeProgram and BpfApplication's ``type: UProbe``/``URetProbe``: a program on a function (or
an offset) of a binary or library, optionally for one process or inside containers: one named
by a process (``containers: {pid}``, a host extension) or every container a Kubernetes-style
selector names (``containers: {namespace, pods, containerNames}``, resolved through the host's
container runtime, each its own attachment)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from reconciler.kernel.tracing.elfsyms import ElfFile, Lookup, TargetError, printable
from reconciler.kernel.types import ProgType, UprobePoint
from reconciler.kinds import sections
from reconciler.kinds.containers import container_index, container_selector, selector_rules
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    HostQuery,
    IndexPart,
    LinkValues,
    ProgramKind,
    Resolver,
    Target,
    Values,
)


def uprobe_index(
    target: str, func_name: str | None, offset: int, container_pid: int | None = None
) -> str:
    """``/usr/bin/bash:readline``, ``...:readline+16`` or, without a function, ``...+0x1a2b``;
    the target as written (``libc:malloc``), with ``@PID`` appended inside a container."""
    if func_name:
        index = f"{target}:{func_name}" + (f"+{offset}" if offset else "")
    else:
        index = f"{target}+{offset:#x}"
    return index + (f"@{container_pid}" if container_pid else "")


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    containers = spec.get("containers") or {}
    values = {
        "target": spec["target"],
        "func_name": spec.get("func_name"),
        "offset": spec["offset"],
        "retprobe": spec["retprobe"],
        "pid": spec.get("pid") or None,  # 0, like omitted, means every process
        "container_pid": containers.get("pid"),
        "containers": container_selector(containers, "containernames"),
    }
    fields = {
        "target": (*at, "target"),
        "func_name": (*at, "func_name"),
        "offset": (*at, "offset"),
        "container_pid": (*at, "containers", "pid"),
        "containers": (*at, "containers"),
    }
    return LinkValues(values, fields)


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    containers = link.get("containers") or {}
    values = {
        "target": link["target"],
        "func_name": link.get("function"),
        "offset": link["offset"],
        "retprobe": app.retprobe,
        "pid": link.get("pid") or None,
        "container_pid": containers.get("pid"),
        "containers": container_selector(containers, "containerNames"),
    }
    fields = {
        "target": (*path, "target"),
        "func_name": (*path, "function"),
        "offset": (*path, "offset"),
        "container_pid": (*path, "containers", "pid"),
        "containers": (*path, "containers"),
    }
    return LinkValues(values, fields)


def _targets(v: Values, host: Resolver) -> list[Target]:
    if v.get("containers") is None:
        target = _target(v, host, v["container_pid"])
        return [target] if target is not None else []
    out = []
    for container in host.containers(v["containers"]):
        found = _target(v, host, container["pid"])
        if found is not None:
            index = f"{container_index(container)}:{found.index}"
            out.append(Target(index, found.point, found.attributes))
    return out


def _target(v: Values, host: Resolver, container_pid: int | None) -> Target | None:
    """The one attach point, inside ``container_pid``'s mount namespace if given; the index
    names the pid only for ``containers: {pid}`` (a selected container is named instead)."""
    target: str = v["target"]
    target_path = target if target.startswith("/") else host.library(container_pid)
    if target_path is None:
        return None
    attributes = {
        "target": target,
        "target_path": target_path,
        "func_name": v["func_name"],
        "offset": v["offset"],
        "retprobe": v["retprobe"],
        "pid": v["pid"],
        "container_pid": container_pid,
    }
    probe = UprobePoint(
        target_path, v["func_name"], v["offset"], v["retprobe"], v["pid"], container_pid
    )
    index = uprobe_index(target, v["func_name"], v["offset"], v["container_pid"])
    return Target(index, probe, attributes)


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    index = uprobe_index(v["target"], v["func_name"], v["offset"], v["container_pid"])
    if v.get("containers") is not None:
        # The pod and container names are the host's; only the namespace is known here.
        index = f"{v['containers']['namespace'] or ''}//:{index}"
    if stored_length(v["func_name"] or "") > stored_length(v["target"]):
        return [IndexPart(index, "func_name", None, "the function name")]
    return [IndexPart(index, "target", None, "the target path")]


def _count(v: Values) -> int | None:
    return None if v.get("containers") is not None else 1  # selected containers: the host's


def _rules(v: Values, in_application: bool) -> list[tuple[str | None, str]]:
    names = "containerNames" if in_application else "containernames"
    problems = selector_rules(v, names)
    if problems:
        return problems
    if not v["func_name"] and not v["offset"]:
        function = "function" if in_application else "func_name"
        return [
            (
                None,
                f"set {function} (a function in target) or a non-zero offset (a byte offset in "
                "target); with neither, the uprobe has nowhere to attach",
            )
        ]
    return []


def _probe_problems(p: UprobePoint, q: HostQuery) -> list[str]:
    return uprobe_problems(p)


def uprobe_problems(p: UprobePoint) -> list[str]:
    """What stops a uprobe from being set at ``p``: the process, the target file (a regular ELF
    executable or library of this machine) and the function in it, as libbpf resolves it."""
    if p.container_pid is not None and not os.path.exists(f"/proc/{p.container_pid}"):
        return [
            f"no process with pid {p.container_pid} runs on this host, so its mount namespace "
            "(spec.containers.pid) cannot be entered"
        ]
    problems = []
    if p.pid is not None and not os.path.exists(f"/proc/{p.pid}"):
        problems.append(f"no process with pid {p.pid} runs on this host")
    seen_from = f"/proc/{p.container_pid}/root" if p.container_pid else ""
    inside = f" inside the mount namespace of pid {p.container_pid}" if seen_from else ""
    target = printable(p.target)
    try:
        with ElfFile(seen_from + p.target) as elf:
            offset = 0
            if p.func_name is not None:
                found = elf.find_function(p.func_name)
                if found.offset is None:
                    return [*problems, _no_function(target + inside, p.func_name, found)]
                offset = found.offset
            if offset + p.offset > elf.size:
                problems.append(
                    f"uprobe target {target}{inside}: offset {offset + p.offset:#x} lies beyond "
                    f"its end ({elf.size} bytes), so the kernel refuses the probe; fix spec.offset"
                )
    except TargetError as e:
        if str(e) == "does not exist":
            problems.append(
                f"uprobe target {target} does not exist{inside} on this host; fix spec.target "
                "(a path, or a library name such as libc)"
            )
        else:
            problems.append(f"uprobe target {target}{inside} {e}; fix spec.target")
    return problems


def _no_function(target: str, func_name: str, found: Lookup) -> str:
    name = printable(func_name)
    if found.problem is not None:
        return (
            f"uprobe target {target} has no function {name} that libbpf can probe: {found.problem}"
        )
    where = (
        "not among the functions it exports (.dynsym), and it has no .symtab: it is stripped"
        if found.stripped
        else "not in its .dynsym or .symtab"
    )
    hint = f" (did you mean {', '.join(found.near)}?)" if found.near else ""
    return (
        f"uprobe target {target} has no function {name} ({where}); fix spec.func_name{hint}, "
        "or give spec.offset"
    )


KIND = ProgramKind(
    name="UprobeProgram",
    prog_type=ProgType.UPROBE,
    article="a",
    app_types=(AppType("UProbe", "uprobe"), AppType("URetProbe", "uretprobe", retprobe=True)),
    point_classes=(UprobePoint,),
    sections=sections.of("kprobe", 'SEC("uprobe")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=_index_parts,
    attributes=("target", "target_path", "func_name", "offset", "retprobe", "pid", "container_pid"),
    link_rules=_rules,
    static_count=_count,
    feature="uprobe",
    feature_words="uprobes",
    host_checks=_probe_problems,
    docs_anchor="uprobeprogram",
)
