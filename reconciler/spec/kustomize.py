"""Directories laid out for kustomize, read the way ``kustomize build`` reads them.

bpfman's own examples (and many config repos) are kustomize directories: a ``kustomization.yaml``
lists ``resources``, overrides the bytecode image with ``images:``, patches fields, and mixes
bpfman's kinds with DaemonSets and Namespaces. A directory holding a kustomization is read only
through it, with this subset of kustomize (the transformers in kustomize's own order):

- ``resources`` (and the older ``bases``): files, and directories holding a kustomization
  (built first, recursively). A plain file must lie in the kustomization's directory or below
  it, as kustomize's default load restrictor requires; a directory may be anywhere in the source
  (``bpfman plan REPO --path default/x`` reads an overlay whose base is ``../../base/x``).
- ``patchesStrategicMerge``, ``patches`` (a merge patch, or a JSON 6902 list of operations, with
  an optional ``target``), ``namespace`` (BpfApplication only: the other kinds are
  cluster-scoped), ``namePrefix``/``nameSuffix``, ``commonLabels``/``labels``,
  ``commonAnnotations``, ``patchesJson6902``, ``images`` (applied to bytecode images too).
- Generators (``configMapGenerator``, ``secretGenerator``) make ConfigMaps and Secrets, never a
  bpfman resource: they are not run. Every other field is an error naming it.

Merge patches follow kustomize's rules for custom resources (no schema): maps merge, lists and
scalars are replaced, ``null`` deletes. Resources of other API groups (and bpfman-operator's
own configuration and status kinds) are not bpfman's to load: they are returned as ``skipped``
(counted by kind) rather than as problems.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.spec.loader import (
    BPFMAN_GROUP,
    OPERATOR_KINDS,
    Document,
    format_path,
    load_file,
)
from reconciler.spec.model import Origin, Problem, relpath

NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
NAMESPACED = ("BpfApplication",)
IMAGE_FIELDS = (("spec", "bytecode", "image", "url"), ("spec", "byteCode", "image", "url"))
MAX_DEPTH = 32  # kustomizations including kustomizations: a cycle or a runaway tree stops here

_KNOWN = {
    "apiVersion", "kind", "metadata", "resources", "bases", "images", "namePrefix",
    "nameSuffix", "commonLabels", "labels", "commonAnnotations", "namespace", "patches",
    "patchesStrategicMerge", "patchesJson6902",
}  # fmt: skip
_IGNORED = {"configMapGenerator", "secretGenerator", "generatorOptions"}


def kustomization_in(directory: Path) -> Path | None:
    for name in NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Built:
    docs: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # "apps/v1 DaemonSet" -> count
    files: set[Path] = field(default_factory=set)  # every file read, for the source digest
    digests: dict[str, bytes] = field(default_factory=dict)  # their SHA-256 as read, by path
    confine: Path = Path("/")


def build(directory: Path, base: Path, confine: Path | None = None) -> Built:
    """The documents of the kustomization in ``directory`` (messages name files relative to
    ``base``): bpfman's, transformed; the others counted in ``skipped``. Every kustomization
    it reads must lie under ``confine`` (the source; default ``directory``)."""
    out = Built(confine=(confine or directory).resolve())
    docs = _build(directory, base, out, ())
    for doc in docs:
        api = doc.data.get("apiVersion")
        kind = doc.data.get("kind")
        if kind is not None and (not _bpfman(doc) or kind in OPERATOR_KINDS):
            out.skipped[f"{api} {kind}"] += 1
            continue
        out.problems.extend(_unprintable(doc))
        out.docs.append(doc)
    return out


class _Stop(Exception):
    """A problem that makes the rest of one kustomization meaningless (it is recorded)."""


def _build(directory: Path, base: Path, out: Built, stack: tuple[Path, ...]) -> list[Document]:
    path = kustomization_in(directory)
    if path is None:
        return []
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(relpath(p, base) for p in (*stack, real))
        out.problems.append(Problem(Origin(relpath(path, base), 1), "", f"a cycle: {chain}"))
        return []
    if len(stack) >= MAX_DEPTH:
        where = Origin(relpath(path, base), 1)
        out.problems.append(Problem(where, "", f"kustomizations nested over {MAX_DEPTH} deep"))
        return []
    out.files.add(path)
    found, problems = load_file(
        path, base, allow_breaks=_patch_text, operator_objects=True, digests=out.digests
    )
    out.problems.extend(problems)
    if problems or not found:
        return []
    if len(found) > 1:
        out.problems.append(found[1].problem((), "a kustomization must be one YAML document"))
        return []
    k = found[0]
    try:
        return _Kustomization(k, directory, base, out, (*stack, real)).run()
    except _Stop:
        return []


class _Kustomization:
    def __init__(
        self, doc: Document, directory: Path, base: Path, out: Built, stack: tuple[Path, ...]
    ) -> None:
        self.doc, self.directory, self.base, self.out, self.stack = doc, directory, base, out, stack
        self.data: dict[str, Any] = doc.data

    def fail(self, path: tuple[Any, ...], message: str) -> _Stop:
        self.out.problems.append(self.doc.problem(path, message))
        return _Stop()

    def run(self) -> list[Document]:
        for key in self.data:
            if key in _KNOWN or key in _IGNORED:
                continue
            raise self.fail(
                (key,),
                f"{key} is a kustomize feature bpfman does not apply; bpfman reads resources, "
                "images, namePrefix, nameSuffix, namespace, commonLabels, labels, "
                "commonAnnotations and patches (merge or JSON 6902): remove it, or run "
                "kustomize build and give bpfman its output",
            )
        docs: list[Document] = []
        for key in ("resources", "bases"):
            for n, entry in enumerate(self._list(key)):
                docs.extend(self._resource(entry, (key, n)))
        for n, entry in enumerate(self._list("patchesStrategicMerge")):
            self._merge_patch(docs, entry, None, ("patchesStrategicMerge", n))
        for n, entry in enumerate(self._list("patches")):
            self._patch(docs, entry, ("patches", n))
        self._namespace(docs)
        self._names(docs)
        self._labels(docs)
        self._annotations(docs)
        for n, entry in enumerate(self._list("patchesJson6902")):
            self._patch(docs, entry, ("patchesJson6902", n), json6902=True)
        for n, entry in enumerate(self._list("images")):
            self._image(docs, entry, ("images", n))
        return docs

    # -- fields ----------------------------------------------------------------------------

    def _list(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail((key,), f"{key} must be a list")
        return value

    def _map(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.fail((key,), f"{key} must map names to strings")
        return value

    # -- resources ---------------------------------------------------------------------------

    def _resource(self, entry: Any, at: tuple[Any, ...]) -> list[Document]:
        if not isinstance(entry, str) or not entry:
            raise self.fail(at, "a resource is a file or directory path")
        if "://" in entry or entry.startswith(("github.com/", "git@")):
            raise self.fail(
                at,
                f"{entry} is a remote resource; bpfman does not fetch them: vendor it into the "
                "repository and name its path",
            )
        target = self.directory / entry
        if target.is_dir():
            if kustomization_in(target) is None:
                raise self.fail(at, f"{entry} is a directory without a kustomization.yaml")
            if not _under(target, self.out.confine):
                both = Path(os.path.commonpath([self.out.confine, target.resolve()]))
                inner = os.path.relpath(self.out.confine, both)
                raise self.fail(
                    at,
                    f"{entry} is outside the source {self.out.confine}; give the directory that "
                    f"holds both as the source and the source's place in it with --path: "
                    f"bpfman plan {both} --path {inner} (a git source is read the same way)",
                )
            return _build(target, self.base, self.out, self.stack)
        if not target.exists():
            raise self.fail(at, f"{entry}: no such file or directory")
        if not _under(target, self.directory):
            raise self.fail(
                at,
                f"{entry} is outside this kustomization's directory; kustomize loads files only "
                "from there (a directory with its own kustomization may be anywhere)",
            )
        self.out.files.add(target)
        # Other API groups' resources hold scripts and config text (a DaemonSet's command, a
        # ConfigMap): line breaks are read everywhere here, and held to the usual rule only in
        # bpfman's own resources (build()).
        found, problems = load_file(
            target,
            self.base,
            allow_breaks=lambda _: True,
            operator_objects=True,
            digests=self.out.digests,
        )
        self.out.problems.extend(problems)
        return [_copy(d) for d in found]

    def _load_patch(self, entry: Any, at: tuple[Any, ...]) -> Any:
        """The content of a patch: inline (``patch: TEXT``) or a file (``path: FILE``) in this
        kustomization's directory; a mapping (merge patch) or a list (JSON 6902)."""
        from reconciler.spec import yamlread
        from reconciler.spec.loader import read_manifest_bytes

        if isinstance(entry, dict) and isinstance(entry.get("patch"), str):
            text, where, at = entry["patch"], self.doc.file, (*at, "patch")
            line0 = self.doc.line_of(at)
        else:
            name = entry.get("path") if isinstance(entry, dict) else entry
            if not isinstance(name, str):
                raise self.fail(at, "a patch needs path: FILE or patch: TEXT")
            target = self.directory / name
            if not target.is_file() or not _under(target, self.directory):
                raise self.fail(
                    at, f"patch file {name} is not a file in this kustomization's directory"
                )
            self.out.files.add(target)
            try:
                raw = read_manifest_bytes(target)
                self.out.digests[str(target)] = hashlib.sha256(raw).digest()
                text = raw.decode("utf-8")
            except (ValueError, OSError, UnicodeDecodeError) as e:
                raise self.fail(at, f"cannot read patch file {name}: {e}") from None
            where, line0 = relpath(target, self.base), 0
        try:
            docs = [d for d in yamlread.read_documents(text) if d.data is not None]
        except yamlread.YamlError as e:
            self.out.problems.append(Problem(Origin(where, line0 + e.line), "", e.message))
            raise _Stop() from None
        problems = [p for d in docs for p in d.problems]
        if problems:
            p = problems[0]
            self.out.problems.append(
                Problem(Origin(where, line0 + p.line), format_path(p.path), p.message)
            )
            raise _Stop()
        if len(docs) != 1:
            raise self.fail(at, f"a patch must be one YAML document (found {len(docs)})")
        return docs[0].data

    def _patch(
        self, docs: list[Document], entry: Any, at: tuple[Any, ...], json6902: bool = False
    ) -> None:
        if not isinstance(entry, dict):
            raise self.fail(at, "a patch is a mapping with path or patch, and target")
        content = self._load_patch(entry, at)
        target = entry.get("target")
        if target is not None and not isinstance(target, dict):
            raise self.fail((*at, "target"), "target must be a mapping (kind, name, ...)")
        if isinstance(content, list):
            if target is None:
                raise self.fail(at, "a JSON 6902 patch (a list of operations) needs a target")
            for doc in docs:
                if self._selected(doc, target, at):
                    problem = json_patch(doc.data, content)
                    if problem:
                        raise self.fail(at, f"cannot apply the patch to {_name(doc)}: {problem}")
            return
        if json6902:
            raise self.fail(at, "patchesJson6902 takes a list of operations")
        self._merge_patch(docs, content, target, at)

    def _merge_patch(
        self, docs: list[Document], content: Any, target: dict[str, Any] | None, at: tuple[Any, ...]
    ) -> None:
        if isinstance(content, str):  # patchesStrategicMerge: a file name, or inline YAML
            content = self._load_patch(
                content if "\n" not in content and ":" not in content else {"patch": content}, at
            )
        if not isinstance(content, dict):
            raise self.fail(at, "a merge patch is a mapping (a partial resource)")
        if target is None:
            meta = content.get("metadata")
            named = meta.get("name") if isinstance(meta, dict) else None
            target = {"kind": content.get("kind"), "name": named}
            if not target["kind"] or not target["name"]:
                raise self.fail(at, "a patch without target must name its kind and metadata.name")
            hits = [d for d in docs if self._selected(d, target, at)]
            if not hits:
                raise self.fail(
                    at, f"the patch matches no resource ({target['kind']} {target['name']})"
                )
        for doc in docs:
            if self._selected(doc, target, at):
                if content.get("$patch") == "delete":
                    doc.data = {}
                    continue
                patch = {k: v for k, v in content.items() if k not in ("apiVersion", "kind")}
                if "metadata" in patch and isinstance(patch["metadata"], dict):
                    patch["metadata"] = {
                        k: v for k, v in patch["metadata"].items() if k not in ("name",)
                    }
                doc.data = merge(doc.data, patch)
        docs[:] = [d for d in docs if d.data]

    def _selected(self, doc: Document, target: dict[str, Any], at: tuple[Any, ...]) -> bool:
        data = doc.data
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        api = str(data.get("apiVersion") or "")
        group, _, version = api.rpartition("/")
        values = {
            "kind": data.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "group": group,
            "version": version,
        }
        for key, want in target.items():
            if key in values:
                if want is None:
                    continue
                why = _unsafe(str(want))
                if why is not None:
                    raise self.fail((*at, "target", key), f"{want!r}: {why}")
                if not re.fullmatch(str(want), str(values[key] or "")):
                    return False
            elif key == "labelSelector":
                if not _labels_match(meta.get("labels") or {}, str(want)):
                    return False
            elif key == "annotationSelector":
                if not _labels_match(meta.get("annotations") or {}, str(want)):
                    return False
            else:
                raise self.fail((*at, "target", key), f"unknown target field {key}")
        return True

    # -- transformers --------------------------------------------------------------------------

    def _namespace(self, docs: list[Document]) -> None:
        namespace = self.data.get("namespace")
        if namespace is None:
            return
        if not isinstance(namespace, str):
            raise self.fail(("namespace",), "namespace must be a string")
        for doc in docs:
            if doc.data.get("kind") in NAMESPACED or not _bpfman(doc):
                doc.data.setdefault("metadata", {})["namespace"] = namespace

    def _names(self, docs: list[Document]) -> None:
        prefix, suffix = self.data.get("namePrefix") or "", self.data.get("nameSuffix") or ""
        if not isinstance(prefix, str) or not isinstance(suffix, str):
            raise self.fail(("namePrefix",), "namePrefix and nameSuffix must be strings")
        if not prefix and not suffix:
            return
        for doc in docs:
            meta = doc.data.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("name"), str):
                meta["name"] = prefix + meta["name"] + suffix

    def _labels(self, docs: list[Document]) -> None:
        pairs = dict(self._map("commonLabels"))
        for n, entry in enumerate(self._list("labels")):
            more = entry.get("pairs") if isinstance(entry, dict) else None
            if not isinstance(more, dict):
                raise self.fail(("labels", n), "each labels entry needs pairs: {name: value}")
            pairs.update({str(k): str(v) for k, v in more.items()})
        for doc in docs:
            if pairs:
                meta = doc.data.setdefault("metadata", {})
                meta["labels"] = {**(meta.get("labels") or {}), **pairs}

    def _annotations(self, docs: list[Document]) -> None:
        pairs = self._map("commonAnnotations")
        for doc in docs:
            if pairs:
                meta = doc.data.setdefault("metadata", {})
                meta["annotations"] = {**(meta.get("annotations") or {}), **pairs}

    def _image(self, docs: list[Document], entry: Any, at: tuple[Any, ...]) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise self.fail(at, "an images entry needs name (and newName, newTag or digest)")
        for key in ("newName", "newTag", "digest"):
            if entry.get(key) is not None and not isinstance(entry[key], (str, int, float)):
                raise self.fail((*at, key), f"{key} must be a string")
        for doc in docs:
            for path in IMAGE_FIELDS:
                url = _get(doc.data, path)
                if isinstance(url, str):
                    new = retag(url, entry)
                    if new is not None:
                        _set(doc.data, path, new)


MAX_PATTERN = 256


def _unsafe(pattern: str) -> str | None:
    """Why a target pattern may not be used, or None. kustomize's targets are regular
    expressions matched against names of up to 253 characters; a repetition inside a repetition
    (``(a+)+``) can take exponential time there, so such patterns are refused, as are long ones
    and ones that do not compile."""
    import re._parser as parser  # the parse tree Python's re itself builds

    if len(pattern) > MAX_PATTERN:
        return f"a target pattern is at most {MAX_PATTERN} characters"
    try:
        tree = parser.parse(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        return f"not a regular expression ({e})"
    repeats = (parser.MAX_REPEAT, parser.MIN_REPEAT, parser.POSSESSIVE_REPEAT)

    def nested(items: Any, inside: bool) -> bool:
        """A repetition, or an alternation, inside a repetition."""
        for op, arg in items:
            found = (
                (op in repeats and (inside or nested(arg[2], True)))
                or (op is parser.SUBPATTERN and nested(arg[3], inside))
                or (
                    op is parser.BRANCH
                    and (inside or any(nested(branch, inside) for branch in arg[1]))
                )
            )
            if found:
                return True
        return False

    if nested(tree, False):
        return (
            "a repetition of a repetition or of alternatives can take exponential time; "
            "simplify it (kustomize targets are usually a name, or a prefix and .*)"
        )
    return None


def _patch_text(path: tuple[Any, ...]) -> bool:
    """Inline patches are YAML text, line breaks and all."""
    return (
        len(path) == 3 and path[0] in ("patches", "patchesJson6902") and path[2] == "patch"
    ) or (len(path) == 2 and path[0] == "patchesStrategicMerge")


# -- helpers ------------------------------------------------------------------------------------


def _copy(doc: Document) -> Document:
    return Document(
        doc.path, doc.file, doc.index, doc.start_line, copy.deepcopy(doc.data), doc.lines
    )


def _under(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _unprintable(doc: Document) -> list[Problem]:
    """The line-break rule of loader.load_file, for a bpfman resource read with breaks allowed:
    only annotation values may hold them."""
    from reconciler.spec.loader import annotation_breaks
    from reconciler.spec.yamlread import check_printable

    out = []
    pending: list[tuple[tuple[Any, ...], Any]] = [((), doc.data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            pending.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            pending.extend(((*path, n), v) for n, v in enumerate(value))
        elif isinstance(value, str):
            why = check_printable(value, allow_breaks=annotation_breaks(path))
            if why is not None:
                out.append(doc.problem(path, why))
    return out


def _bpfman(doc: Document) -> bool:
    api = doc.data.get("apiVersion")
    return isinstance(api, str) and api.startswith(BPFMAN_GROUP + "/")


def _name(doc: Document) -> str:
    meta = doc.data.get("metadata") if isinstance(doc.data.get("metadata"), dict) else {}
    return f"{doc.data.get('kind')} {meta.get('name')} ({doc.origin})"


def _labels_match(labels: dict[str, Any], selector: str) -> bool:
    """kustomize's label selector strings: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            if str(labels.get(k)) == v:
                return False
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if str(labels.get(k)) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def retag(url: str, entry: dict[str, Any]) -> str | None:
    """``url`` with kustomize's image override applied, or None when it names another image."""
    rest, _, digest = url.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, "")
    if name != entry["name"]:
        return None
    new_name = str(entry.get("newName") or name)
    if entry.get("digest") is not None:
        return f"{new_name}@{entry['digest']}"
    if entry.get("newTag") is not None:
        return f"{new_name}:{entry['newTag']}"
    return new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def merge(target: Any, patch: Any) -> Any:
    """A merge patch as kustomize applies one to a custom resource: maps merge, anything else
    is replaced, null deletes."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def json_patch(data: dict[str, Any], ops: list[Any]) -> str | None:
    """Apply RFC 6902 ``ops`` to ``data`` in place; the first failure in words, or None."""
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            return f"operation {n} needs op and path"
        kind, path = op.get("op"), op["path"]
        try:
            if kind in ("add", "replace", "test") and "value" not in op:
                return f"operation {n} ({kind} {path}) needs a value"
            if kind == "add":
                _pointer_put(data, path, copy.deepcopy(op["value"]), insert=True)
            elif kind == "replace":
                _pointer_get(data, path)
                _pointer_put(data, path, copy.deepcopy(op["value"]), insert=False)
            elif kind == "remove":
                _pointer_remove(data, path)
            elif kind in ("move", "copy"):
                source = op.get("from")
                if not isinstance(source, str):
                    return f"operation {n} ({kind} {path}) needs from"
                value = copy.deepcopy(_pointer_get(data, source))
                if kind == "move":
                    _pointer_remove(data, source)
                _pointer_put(data, path, value, insert=True)
            elif kind == "test":
                if _pointer_get(data, path) != op["value"]:
                    return f"operation {n} (test {path}) failed"
            else:
                return f"operation {n} has unknown op {kind!r}"
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return f"operation {n} ({kind} {path}): no such path ({e})"
    return None


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _step(container: Any, token: str) -> Any:
    if isinstance(container, list):
        return container[int(token)]
    if isinstance(container, dict):
        return container[token]
    raise TypeError(f"{token} is below a value, not a map or list")


def _pointer_get(data: Any, pointer: str) -> Any:
    for token in _tokens(pointer):
        data = _step(data, token)
    return data


def _pointer_put(data: Any, pointer: str, value: Any, insert: bool) -> None:
    tokens = _tokens(pointer)
    if not tokens:
        raise ValueError("cannot replace the whole resource")
    parent = data
    for token in tokens[:-1]:
        parent = _step(parent, token)
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if insert:
            if not 0 <= index <= len(parent):
                raise IndexError(index)
            parent.insert(index, value)
        else:
            parent[index] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise TypeError(f"{last} is below a value, not a map or list")


def _pointer_remove(data: Any, pointer: str) -> None:
    tokens = _tokens(pointer)
    if not tokens:
        raise ValueError("cannot remove the whole resource")
    parent = data
    for token in tokens[:-1]:
        parent = _step(parent, token)
    if isinstance(parent, list):
        del parent[int(tokens[-1])]
    elif isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        raise TypeError(f"{tokens[-1]} is below a value")
