"""Address indexes: what each attach point is called in its address (``KIND/NAME[INDEX]``), and
so in its bpffs pin path, and the check that those names fit in bpffs.

An address becomes the pin directory ``KIND/NAME/INDEX`` under the bpffs root, each part one
file name, stored with '/' and '%' (:mod:`reconciler.address`) and '.' (:mod:`..kernel.bpffs`)
written as three bytes each. A file name longer than NAME_MAX (255 bytes) fails only when the
kernel is asked to create it (ENAMETOOLONG, half way through an apply), so
:func:`pin_name_problems` refuses such manifests in validation (and :func:`map_name_problems`
bytecode whose maps, pinned under their names, have names that long). Everything in an index is
known without the host but interface names that discovery or ``primarynodeinterface`` finds:
those are assumed as long as Linux allows (IFNAMSIZ - 1 = 15 bytes), and the plan checks the
real ones (:func:`reconciler.hostpaths.pin_path_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from reconciler.address import Address
from reconciler.kernel import bpffs
from reconciler.kernel.types import ProgType
from reconciler.spec.loader import Document, FieldPath
from reconciler.spec.model import Problem
from reconciler.spec.programs import LinkSpec, Program

# Where `ip netns add NAME` bind-mounts named namespaces (as reconciler.kernel.netns knows too; not
# imported from there, which would load libc through ctypes just to expand manifests).
NAMED_NETNS_DIR = "/run/netns"
IFNAME_MAX = 15  # IFNAMSIZ - 1: the longest interface name Linux accepts
NAME_MAX = bpffs.NAME_MAX


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


def netns_index(netns: str | None, ifname: str) -> str:
    """``eth0``; in a namespace ``ip netns`` named, ``blue:eth0`` (for /run/netns/blue); in any
    other namespace, its path: ``/proc/42/ns/net:eth0``. Interface names never hold ':' or '/',
    so the index is unambiguous."""
    if netns is None:
        return ifname
    parent, name = os.path.split(netns)
    return f"{name if parent == NAMED_NETNS_DIR else netns}:{ifname}"


def kprobe_index(func_name: str, offset: int) -> str:
    return func_name + (f"+{offset}" if offset else "")


# --- the NAME_MAX check --------------------------------------------------------------------------


def stored_length(component: str) -> int:
    """Bytes ``component`` (a name or an index, as written) takes as a bpffs file name."""
    return bpffs.stored_length(Address("K", "n", component).pin_dir().split("/", 2)[2])


def pin_name_problems(doc: Document, programs: Sequence[Program]) -> list[Problem]:
    """One problem per name or index of a schema-valid manifest that would be a bpffs file name
    over NAME_MAX: ``metadata.name``, and each attach point's index (an application's prefixed
    with its program's name)."""
    kind: str = doc.data["kind"]
    name: str = doc.data["metadata"]["name"]
    problems = []
    n = bpffs.stored_length(name)
    if n > NAME_MAX:
        problems.append(
            doc.problem(
                ("metadata", "name"),
                f"is {n} bytes as a bpffs file name (each '.' is stored as %2E, 3 bytes), over "
                f"the limit of {NAME_MAX} bytes (NAME_MAX); every pin path of this manifest "
                f"starts {kind}/NAME/, so use a shorter name or fewer dots",
            )
        )
    seen: set[str] = set()
    for program in programs:
        for link in program.links:
            for index, where, what in _indexes(program, link):
                full = program.index_prefix + index
                n = stored_length(full)
                if n <= NAME_MAX or full in seen:
                    continue
                seen.add(full)
                prefix = program.index_prefix
                if prefix and stored_length(prefix) >= stored_length(index):
                    where, what = program.function_path, "the program's name"
                problems.append(
                    doc.problem(
                        where,
                        f"becomes the address index {_shown(full)}, a pin directory name of "
                        f"{n} bytes in bpffs ('/', '%' and '.' are stored as 3 bytes each), over "
                        f"the limit of {NAME_MAX} bytes (NAME_MAX); shorten {what}",
                    )
                )
    return problems


def map_name_problems(
    doc: Document, maps: Sequence[str], where: FieldPath, written: str
) -> list[Problem]:
    """Maps are pinned under their names (``<pin dir>/maps/<name>``): one problem per map of the
    bytecode whose name is over NAME_MAX."""
    return [
        doc.problem(
            where,
            f"map {_shown(name)} in {written} has a name of {len(os.fsencode(name))} bytes; it "
            f"is pinned under that name, and a file name is at most {NAME_MAX} bytes (NAME_MAX): "
            "give the map a shorter name in the program's source",
        )
        for name in maps
        if len(os.fsencode(name)) > NAME_MAX
    ]


def _indexes(program: Program, link: LinkSpec) -> Iterator[tuple[str, FieldPath, str]]:
    """Each index ``link`` expands to without the host: (index, the field most of it comes
    from, what to shorten)."""
    v = link.values
    kind = program.prog_type
    if kind in (ProgType.XDP, ProgType.TCX, ProgType.TC):
        netns = os.path.normpath(v["netns"]) if v["netns"] else None
        names = v["interfaces"] if v["interfaces"] is not None else ["x" * IFNAME_MAX]
        for ifname in names:
            if netns is not None:
                yield (
                    netns_index(netns, ifname),
                    link.where("netns"),
                    f"the network namespace path (a namespace under {NAMED_NETNS_DIR} is "
                    "named by its file name alone)",
                )
            else:
                yield ifname, link.where("selector"), "the interface name"
    elif kind is ProgType.TRACEPOINT:
        where = link.where("names")
        for i, name in enumerate(v["names"]):
            yield name, (*where, i) if where[-1] == "names" else where, "the tracepoint name"
    elif kind is ProgType.UPROBE:
        func = v["func_name"] or ""
        index = uprobe_index(v["target"], v["func_name"], v["offset"], v["container_pid"])
        if stored_length(func) > stored_length(v["target"]):
            yield index, link.where("func_name"), "the function name"
        else:
            yield index, link.where("target"), "the target path"
    elif kind is ProgType.KPROBE:
        yield kprobe_index(v["func_name"], v["offset"]), link.where("func_name"), "the function"
    else:  # FENTRY, FEXIT
        yield v["func_name"], link.where("func_name"), "the function name"


def _shown(text: str, keep: int = 48) -> str:
    """Quoted, cut to ``keep`` characters, control characters escaped."""
    cut = text if len(text) <= keep else f"{text[: keep - 3]}..."
    return repr(cut) if cut.isprintable() else ascii(cut)
