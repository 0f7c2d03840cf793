"""``bpfman convert``: rewrite manifests into the current bpfman.io/v1alpha1 form.

Three kinds of old or foreign input are rewritten, each a pure function on the parsed document:

- bpfman-operator v0.5.x's BpfApplication (lowercase fields, each program's settings beside its
  bpffunctionname) becomes a current ClusterBpfApplication: v0.5.x's BpfApplication was
  cluster-scoped and held kernel-wide programs (kprobes, tracepoints), which today only a
  ClusterBpfApplication may;
- a ``kubectl get -o yaml`` export loses what the API server wrote (uid, resourceVersion,
  managedFields, status, ...), and a ``kind: List`` becomes its items, one document each;
- with ``--to application``, a legacy per-kind manifest (XdpProgram, ...) becomes one
  ClusterBpfApplication with the same name.

A document already current comes back equal, so its file shows no change. Input that has no
current equivalent raises :class:`ConvertError` at the field to fix; nothing is written then.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.convert.members import (
    MEMBERS,
    ConvertError,
    FieldPath,
    bytecode,
    mapping,
    no_equivalent,
)
from reconciler.errors import UserError
from reconciler.spec import loader
from reconciler.spec.schema import API_VERSION, APPLICATION_KINDS, V05_TYPES, v05_application

# Set by the Kubernetes API server; a manifest must not carry them (schemas/common.json rejects
# each with "set by the Kubernetes API server").
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "ownerReferences",
    "finalizers",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# The legacy kind -> its settings' converter name (a v0.5.x application member of that type).
LEGACY_MEMBERS = {
    "XdpProgram": "xdp",
    "TcProgram": "tc",
    "TcxProgram": "tcx",
    "TracepointProgram": "tracepoint",
    "KprobeProgram": "kprobe",
    "UprobeProgram": "uprobe",
    "FentryProgram": "fentry",
    "FexitProgram": "fexit",
    "CgroupSkbProgram": "cgroupskb",
    "CgroupSockAddrProgram": "cgroupsockaddr",
}
# Fields every legacy spec (and v0.5.x member) has beside its program's own settings.
COMMON_FIELDS = ("bpffunctionname", "bytecode", "nodeselector", "globaldata", "mapownerselector")
SPEC_RENAMES = {
    "nodeselector": "nodeSelector",
    "bytecode": "byteCode",
    "globaldata": "globalData",
    "mapownerselector": "mapOwnerSelector",
}
# --- one document ----------------------------------------------------------------------------


def convert_document(data: Any, to_application: bool = False) -> list[Any]:
    """The current form of one parsed document: a list, since a ``kind: List`` becomes its items.
    Documents that are not bpfman's are returned as they are."""
    if isinstance(data, dict) and _is_list(data):
        out: list[Any] = []
        for i, item in enumerate(data["items"]):
            try:
                out.extend(convert_document(item, to_application))
            except ConvertError as e:
                raise ConvertError(("items", i, *e.path), e.message) from None
        return out
    if not isinstance(data, dict) or data.get("apiVersion") != API_VERSION:
        return [data]
    doc = clean_export(data)
    kind = doc.get("kind")
    if kind in APPLICATION_KINDS and v05_application(doc):
        return [convert_v05_application(doc)]
    if to_application and kind in LEGACY_MEMBERS:
        return [convert_legacy(doc)]
    return [doc]


def _is_list(data: dict[str, Any]) -> bool:
    kind = data.get("kind")
    return (
        isinstance(kind, str)
        and kind.endswith("List")
        and isinstance(data.get("items"), list)
        and "spec" not in data
    )


def clean_export(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without what the API server wrote into a ``kubectl get -o yaml`` export."""
    doc = {key: copy.deepcopy(value) for key, value in data.items() if key != "status"}
    metadata = doc.get("metadata")
    if isinstance(metadata, dict):
        for name in SERVER_METADATA:
            metadata.pop(name, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
            if not annotations:
                del metadata["annotations"]
    return doc


def convert_v05_application(doc: dict[str, Any]) -> dict[str, Any]:
    """A v0.5.x BpfApplication (already cleaned) as a current ClusterBpfApplication."""
    spec = mapping(doc.get("spec"), ("spec",))
    shared_owner = spec.get("mapownerselector") or spec.get("mapOwnerSelector")
    programs: list[dict[str, Any]] = []
    raw = spec.get("programs")
    if not isinstance(raw, list) or not raw:
        raise ConvertError(("spec", "programs"), "an application needs at least one program")
    for i, program in enumerate(raw):
        at: FieldPath = ("spec", "programs", i)
        converted, owner = _v05_program(mapping(program, at), at)
        if owner:
            # v0.5.x let each program name a map owner; an application now has one for all.
            if shared_owner and owner != shared_owner:
                raise ConvertError(
                    (*at, "mapownerselector"),
                    "this program's mapownerselector differs from another's; a current "
                    "application has one mapOwnerSelector for all its programs: make them equal "
                    "or split the application",
                )
            shared_owner = owner
        programs.append(converted)
    new_spec: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "programs":
            new_spec["programs"] = programs
        elif key in ("bytecode", "byteCode"):
            new_spec["byteCode"] = bytecode(value, ("spec", key))
        elif key in ("mapownerselector", "mapOwnerSelector"):
            continue  # placed below, with any program's
        elif key in SPEC_RENAMES or key in SPEC_RENAMES.values():
            new_spec[SPEC_RENAMES.get(key, key)] = value
        else:
            raise ConvertError(("spec", key), no_equivalent(key, "a v0.5.x application's spec"))
    if shared_owner:
        new_spec = _insert_before(new_spec, "programs", "mapOwnerSelector", shared_owner)
    return _with(doc, kind="ClusterBpfApplication", spec=new_spec)


def convert_legacy(doc: dict[str, Any]) -> dict[str, Any]:
    """A legacy per-kind manifest (already cleaned) as one ClusterBpfApplication of its name."""
    kind = str(doc["kind"])
    spec = mapping(doc.get("spec"), ("spec",))
    settings = {k: v for k, v in spec.items() if k not in COMMON_FIELDS}
    if "bpffunctionname" not in spec:
        raise ConvertError(("spec",), "bpffunctionname is missing: name the program's function")
    if "bytecode" not in spec:
        raise ConvertError(("spec",), "bytecode is missing: set bytecode.path or bytecode.image")
    app_type, member, body = MEMBERS[LEGACY_MEMBERS[kind]](settings, ("spec",))
    new_spec: dict[str, Any] = {}
    for key in ("nodeselector", "bytecode", "globaldata", "mapownerselector"):
        if key in spec:
            value = spec[key]
            new_spec[SPEC_RENAMES[key]] = (
                bytecode(value, ("spec", key)) if key == "bytecode" else value
            )
    new_spec["programs"] = [{"name": spec["bpffunctionname"], "type": app_type, member: body}]
    return _with(doc, kind="ClusterBpfApplication", spec=new_spec)


def _v05_program(program: dict[str, Any], at: FieldPath) -> tuple[dict[str, Any], Any]:
    """One v0.5.x program -> (the current program, its map owner selector if it names one)."""
    spelled = program.get("type")
    if not isinstance(spelled, str):
        raise ConvertError((*at, "type"), "the program's type is missing")
    name = _V05_NAMES.get(spelled.lower())
    if name is None:
        raise ConvertError(
            (*at, "type"),
            f"type {spelled!r} has no current equivalent; bpfman-operator v0.5.x's types are "
            f"XDP, TC, TCX, {', '.join(V05_TYPES)}",
        )
    member_key = next((k for k in program if k.lower() == name), None)
    if member_key is None:
        raise ConvertError(at, f"type {spelled} needs its settings in {name}: {{...}}")
    for key in program:
        if key not in ("type", member_key, "bpffunctionname", "mapownerselector"):
            raise ConvertError((*at, key), no_equivalent(key, f"a v0.5.x {spelled} program"))
    member_at = (*at, member_key)
    member = mapping(program[member_key], member_at)
    function = member.get("bpffunctionname", program.get("bpffunctionname"))
    if not isinstance(function, str):
        raise ConvertError(member_at, "bpffunctionname is missing: name the program's function")
    owner = member.get("mapownerselector", program.get("mapownerselector"))
    settings = {k: v for k, v in member.items() if k not in ("bpffunctionname", "mapownerselector")}
    app_type, current_member, body = MEMBERS[name](settings, member_at)
    return {"name": function, "type": app_type, current_member: body}, owner


_V05_NAMES = {t.lower(): t.lower() for t in ("XDP", "TC", "TCX", *V05_TYPES)}


def _with(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``doc`` with ``fields`` replaced in place of the originals, keeping the key order."""
    return {key: fields.get(key, value) for key, value in doc.items()}


def _insert_before(data: dict[str, Any], before: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k == before:
            out[key] = value
        out[k] = v
    return out


# --- files ---------------------------------------------------------------------------------


@dataclass
class Converted:
    """One file: what it holds and, if anything changed, what it becomes."""

    path: Path
    shown: str  # the path as the user named it
    old: str
    new: str | None  # None: already current
    renamed: tuple[tuple[str, str, str], ...] = ()  # (old kind, new kind, name) per document

    def diff(self) -> str:
        if self.new is None:
            return ""
        return "".join(
            difflib.unified_diff(
                self.old.splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile=f"a/{self.shown.lstrip('/')}",
                tofile=f"b/{self.shown.lstrip('/')}",
            )
        )


def convert_file(
    path: Path, shown: str, to_application: bool = False, lenient: bool = False
) -> Converted:
    """Read ``path`` with the manifest reader (duplicate keys and the like refused) and convert
    its documents; a problem is a UserError naming ``shown:LINE``, or with ``lenient`` (a file
    of a kustomize directory, which may be a patch or anything else of kustomize's) leaves the
    file as it is."""
    # Line breaks anywhere (a DaemonSet's script beside the manifests) and the operator's own
    # objects are left as they are: validate judges the result, convert only rewrites.
    docs, problems = loader.load_file(
        path, path.parent, allow_breaks=lambda _: True, operator_objects=True
    )
    if problems and lenient:
        return Converted(path, shown, "", None)
    if problems:
        first = problems[0]
        field = f" {first.path}:" if first.path else ""
        raise UserError(f"{shown}:{first.origin.line}:{field} {first.message}")
    out: list[Any] = []
    for doc in docs:
        try:
            out.extend(convert_document(doc.data, to_application))
        except ConvertError as e:
            where = f"{shown}:{doc.line_of(e.path)}"
            field = f" {loader.format_path(e.path)}:" if e.path else ""
            raise UserError(f"{where}:{field} {e.message}; nothing was written") from None
    old = path.read_text(encoding="utf-8")
    if out == [doc.data for doc in docs]:
        return Converted(path, shown, old, None)
    return Converted(path, shown, old, dump(out), _renamed(docs, to_application))


def _renamed(docs: Sequence[loader.Document], to_application: bool) -> tuple[Any, ...]:
    """(old kind, new kind, name) of each document whose kind the conversion changes."""
    out = []
    for doc in docs:
        data = doc.data
        if not isinstance(data, dict) or _is_list(data):
            continue
        converted = convert_document(data, to_application)
        kind, name = data.get("kind"), (data.get("metadata") or {}).get("name")
        new = converted[0].get("kind") if len(converted) == 1 else None
        if isinstance(kind, str) and isinstance(name, str) and isinstance(new, str) and new != kind:
            out.append((kind, new, name))
    return tuple(out)


def stale_patches(paths: Sequence[str], renamed: set[tuple[str, str, str]]) -> list[str]:
    """A note for each kustomization under ``paths`` whose patch targets a manifest by the kind
    the conversion replaced: kustomize skips a patch whose target matches nothing, silently."""
    from reconciler.spec.kustomize import NAMES

    notes = []
    for text in paths:
        for dirpath, dirnames, filenames in os.walk(text):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(set(filenames) & set(NAMES)):
                notes += _stale_in(Path(dirpath, name), renamed)
    return notes


def _stale_in(path: Path, renamed: set[tuple[str, str, str]]) -> list[str]:
    # The bounded manifest reader (a kustomization is as untrusted as a manifest).
    docs, problems = loader.load_file(
        path, path.parent, allow_breaks=lambda _: True, operator_objects=True
    )
    if problems or len(docs) != 1:
        return []  # not ours to judge here: a plan through it says what is wrong
    data = docs[0].data
    notes = []
    for field in ("patches", "patchesJson6902"):
        entries = data.get(field)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            target = entry.get("target") if isinstance(entry, dict) else None
            if not isinstance(target, dict):
                continue
            for old, new, name in sorted(renamed):
                if target.get("kind") == old and target.get("name") in (None, name):
                    notes.append(
                        f"note: {path}: {field}[{i}] targets {old} {name}, which is now a {new}: "
                        f"change the target's kind to {new}, and its field paths to the new "
                        "names (e.g. /spec/bytecode → /spec/byteCode); kustomize skips a patch "
                        "that matches nothing without a word"
                    )
    return notes


def dump(documents: Sequence[Any]) -> str:
    import yaml  # PyYAML: only convert writes YAML

    class Dumper(yaml.SafeDumper):
        """Lists indented under their key, as kubectl and bpfman's docs write them."""

        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)

    return yaml.dump_all(
        documents,
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        explicit_start=len(documents) > 1,
        width=100,
    )


def manifest_files(paths: Sequence[str]) -> list[tuple[Path, str, bool]]:
    """Each PATH, or every manifest under a directory PATH, with how to name it and whether it
    lies in a kustomize directory."""
    found: list[tuple[Path, str, bool]] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise UserError(f"{text}: no such file or directory")
        try:
            listed, kustomized = loader.find_sources(path)
        except loader.WalkError as e:
            raise UserError(f"{text}: {e}") from None
        # A kustomize directory's files are manifests too (upstream's examples are all laid out
        # so); a plan reads them through the kustomization, convert rewrites them where they are.
        found += [(file, str(file), False) for file in listed]
        found += [(f, str(f), True) for d in kustomized for f in sorted(_kustomized_files(d))]
    return found


def _kustomized_files(directory: Path) -> list[Path]:
    """The YAML files under a kustomize directory but the kustomizations (hidden ones and
    symlinks skipped, as the manifest walk skips them)."""
    from reconciler.spec.kustomize import NAMES

    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith(".") or name in NAMES or path.is_symlink():
                continue
            if name.endswith((".yaml", ".yml")):
                out.append(path)
    return out


def run(paths: Sequence[str], to_application: bool, write: bool) -> int:
    """Convert every file first, so that one that fails leaves every file unwritten; then print
    each diff and, with ``write``, replace the changed files."""
    results = [
        convert_file(p, shown, to_application, lenient)
        for p, shown, lenient in manifest_files(paths)
    ]
    changed = [r for r in results if r.new is not None]
    for result in changed:
        print(result.diff(), end="")
    renamed = {r for result in changed for r in result.renamed}
    for note in stale_patches([p for p in paths if os.path.isdir(p)], renamed) if renamed else ():
        print(note)
    for result in changed if write else ():
        _replace(result.path, str(result.new))
    if not changed:
        print("No changes: every manifest is already in the current form.")
    elif write:
        n = len(changed)
        print(f"Rewrote {n} file{'s' if n != 1 else ''}.")
    return 0


def _replace(path: Path, text: str) -> None:
    """Atomically, keeping the file's permissions (the state file's writer makes it 0600)."""
    from reconciler.state import write_atomic

    mode = path.stat().st_mode & 0o7777
    write_atomic(path, text, prefix=f".{path.name}.")
    os.chmod(path, mode)
