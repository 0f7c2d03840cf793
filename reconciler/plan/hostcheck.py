"""Plan-time checks that only this host can answer: does the interface, tracepoint, kernel function
or binary (and the function in it) exist, and is the attach point free? Each problem names the
address, the manifest and the fix. A program whose type this kernel cannot run gets that one
problem, and no other check of its attach point.

What is checked of one attach point is its kind's (:mod:`reconciler.kinds`: the feature it needs,
that its place exists, then the rest); what is checked across points (several programs on one
hook, or more on one point than the kernel runs) is here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

from reconciler import kinds
from reconciler.address import Address
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    Hook,
    Installed,
    Kernel,
    XdpHook,
)
from reconciler.kinds import HostQuery
from reconciler.plan.hookgroups import hook_label, hook_of_point
from reconciler.spec.model import DesiredAttachment


def _missing_features(
    desired: list[DesiredAttachment], kernel: Kernel, unsupported: set[Address]
) -> list[str]:
    """One problem per manifest whose program type this kernel cannot run, naming each of its
    attachments that needs it (so that --exclude can leave them all out); the addresses of
    such programs are added to ``unsupported``."""
    lacking: dict[tuple[str, str], list[DesiredAttachment]] = {}
    for d in desired:
        kind = kinds.by_prog_type(d.program.prog_type)
        feature = kind.feature
        if feature is None or kernel.probe(feature):
            continue
        unsupported.add(d.address)
        lacking.setdefault((d.address.resource, feature), []).append(d)
    problems = []
    for (_, feature), ds in lacking.items():
        kind = kinds.by_prog_type(ds[0].program.prog_type)
        probe = kernel.probe(feature)
        also = "".join(f"; so does {d.address} ({d.origin})" for d in ds[1:])
        problems.append(
            f"{ds[0].address} ({ds[0].origin}): needs {kind.feature_words}, which kernel "
            f"{kernel.release()} does not support ({probe.reason}); run it on a kernel "
            f"that has them, or select other hosts with nodeselector{also}"
        )
    return problems


def _missing_owners(desired: list[DesiredAttachment], flagged: set[Address]) -> list[str]:
    wanted = {d.address for d in desired}
    problems = []
    for d in desired:
        for owner in d.depends_on:
            if owner not in wanted:
                flagged.add(d.address)
                problems.append(
                    f"{d.address} ({d.origin}): uses the maps of {owner}, which is not wanted on "
                    "this host (removed, or not selected); a map owner cannot be unloaded while "
                    "its users remain"
                )
    return problems


def _crowded_hooks(
    per_hook: dict[Hook, list[DesiredAttachment]], kernel: Kernel, dispatching: bool
) -> list[str]:
    """Several programs on one XDP or TC hook need a dispatcher (and so freplace); a
    dispatcher runs at most MAX_DISPATCHER_SLOTS."""
    problems = []
    modes: dict[tuple[str | None, str], dict[str, list[DesiredAttachment]]] = defaultdict(dict)
    for hook, ds in per_hook.items():
        if isinstance(hook, XdpHook):
            modes[(hook.netns, hook.ifname)][hook.mode] = ds
    for (_, ifname), by_mode in sorted(modes.items(), key=lambda kv: kv[0][1]):
        if len(by_mode) > 1:
            wants = "; ".join(
                f"{mode}: {', '.join(str(d.address) for d in ds)}"
                for mode, ds in sorted(by_mode.items())
            )
            problems.append(
                f"interface {ifname!r}: its XDP programs want different modes ({wants}); an "
                f"interface runs XDP in one mode: give them the same spec.xdpmode, or set it once "
                f"in the host's config (interfaces.{ifname}.xdpmode)"
            )
    for hook, ds in sorted(per_hook.items(), key=lambda kv: hook_label(kv[0])):
        names = ", ".join(f"{d.address} ({d.origin})" for d in ds)
        if dispatching and len(ds) > MAX_DISPATCHER_SLOTS:
            problems.append(
                f"{hook_label(hook)}: {len(ds)} programs want it ({names}), but a dispatcher runs "
                f"at most {MAX_DISPATCHER_SLOTS}; move some to another interface or direction"
            )
        elif not dispatching and len(ds) > 1:
            probe = kernel.probe("freplace")
            problems.append(
                f"{hook_label(hook)}: {len(ds)} programs want it ({names}); several programs on "
                f"one hook run through a dispatcher, which needs freplace (BPF_PROG_TYPE_EXT), "
                f"and kernel {kernel.release()} does not support it ({probe.reason}); keep one "
                f"program per hook on this kernel"
            )
    return problems


def check(
    desired: Iterable[DesiredAttachment],
    kernel: Kernel,
    installed: Iterable[Installed],
    dispatching: bool = False,
) -> list[str]:
    return check_host(desired, kernel, installed, dispatching)[0]


def check_host(
    desired: Iterable[DesiredAttachment],
    kernel: Kernel,
    installed: Iterable[Installed],
    dispatching: bool = False,
) -> tuple[list[str], set[Address]]:
    """The problems, and the addresses they are about (which the verifier need not see)."""
    desired = list(desired)
    flagged: set[Address] = set()
    problems = _missing_features(desired, kernel, flagged) + _missing_owners(desired, flagged)
    answers = cast(Kernel, _Answers(kernel))
    query = HostQuery(answers, frozenset(i.prog_id for i in installed), dispatching)
    points = _Points()
    for d in desired:
        if d.address in flagged:
            continue  # it has its problem already (a type this kernel cannot run, no map owner)
        found = _point_problems(d, query, points)
        if found:
            flagged.add(d.address)
            problems += found
    problems += _crowded_hooks(points.per_hook, kernel, dispatching)
    problems += _crowded_points(points.per_limit)
    return problems, flagged


class _Answers:
    """The kernel, with each host question asked once per plan: a thousand programs on 17
    tracepoints look 17 tracepoints up."""

    _ASKED_ONCE = frozenset(
        (
            "tracepoint_exists",
            "tracepoints",
            "interface_exists",
            "interfaces",
            "missing_kernel_function",
            "cgroup_problem",
            "xdp_program_on",
        )
    )

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __getattr__(self, name: str) -> Any:
        answer = getattr(self._kernel, name)
        if name not in self._ASKED_ONCE:
            return answer

        def once(*args: Any) -> Any:
            key = (name, *args)
            if key not in self._memo:
                self._memo[key] = answer(*args)
            found = self._memo[key]
            return list(found) if isinstance(found, list) else found

        return once


class _Points:
    """The attachments that share a place: a multi-program hook, or a point the kernel runs a
    limited number of programs on (its kind's PointLimit)."""

    def __init__(self) -> None:
        self.per_hook: dict[Hook, list[DesiredAttachment]] = defaultdict(list)
        self.per_limit: dict[tuple[str, str], list[DesiredAttachment]] = defaultdict(list)

    def add(self, d: DesiredAttachment) -> None:
        hook = hook_of_point(d.point)
        if hook is not None:
            self.per_hook[hook].append(d)
        limit = kinds.by_point_class(type(d.point)).point_limit
        if limit is not None:
            self.per_limit[(d.program.prog_type.value, limit.key(d.point))].append(d)


def _point_problems(d: DesiredAttachment, query: HostQuery, points: _Points) -> list[str]:
    """The problems of one attachment's point, by its kind: first that its place exists (if not,
    it counts on no hook), then the rest."""
    kind = kinds.by_point_class(type(d.point))
    where = f"{d.address} ({d.origin})"
    missing = kind.presence_checks(d.point, query)
    if missing:
        return [f"{where}: {problem}" for problem in missing]
    points.add(d)
    return [f"{where}: {problem}" for problem in kind.host_checks(d.point, query)]


def _crowded_points(per_limit: dict[tuple[str, str], list[DesiredAttachment]]) -> list[str]:
    """More programs on one point than the kernel runs there (e.g. BPF_TRACE_MAX_PROGS)."""
    problems = []
    for (_, key), ds in sorted(per_limit.items()):
        limit = kinds.by_point_class(type(ds[0].point)).point_limit
        if limit is not None and len(ds) > limit.limit:
            problems.append(limit.explain(key, len(ds), f"{ds[0].address} at {ds[0].origin}"))
    return problems
