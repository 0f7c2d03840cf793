"""Address indexes (what each attach point is called in its address, ``KIND/NAME[INDEX]``, and
so in its bpffs pin path: each kind's record in :mod:`reconciler.kinds` says) and the check that
those names fit in bpffs.

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
from reconciler.kernel.sys import bpffs
from reconciler.spec.loader import Document, FieldPath
from reconciler.spec.model import Problem
from reconciler.spec.programs import LinkSpec, Program

NAME_MAX = bpffs.NAME_MAX


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
    for part in program.kind.index_parts(link.values, stored_length):
        where = link.where(part.field)
        # A list written out (a legacy kind's names) points at its item; an application's link
        # names one.
        if part.item is not None and where[-1] == part.field:
            where = (*where, part.item)
        yield part.index, where, part.what


def _shown(text: str, keep: int = 48) -> str:
    """Quoted, cut to ``keep`` characters, control characters escaped."""
    cut = text if len(text) <= keep else f"{text[: keep - 3]}..."
    return repr(cut) if cut.isprintable() else ascii(cut)
