"""The host's own files, the host config and the labels file, read as carefully as manifests.

Both are read like a manifest is: as regular files only, never blocking, bounded
(:mod:`reconciler.files`); as YAML that means the same to YAML 1.1 and 1.2 readers, without
duplicate keys or control characters (:mod:`reconciler.spec.yamlread`). The host config is
checked against ``schemas/hostconfig.json``, so a misspelled key (``bytecode_dir:``) is an
error with a suggestion instead of a setting silently ignored. A missing file sets nothing.

Every problem raises :class:`reconciler.spec.HostError` with ``source`` naming the file, so it
is reported as the host's problem, not as a manifest's.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import field
from pathlib import Path
from typing import Any

from reconciler import files
from reconciler.containers import RuntimeConfig
from reconciler.containers.model import DEFAULT_SOCKETS
from reconciler.images.keyless import Identity
from reconciler.images.settings import DEFAULT_PULL_SECRETS_DIR, RegistrySettings
from reconciler.spec.host import HostError
from reconciler.spec.loader import Document, format_path
from reconciler.spec.patterns import full_match
from reconciler.spec.schema import SCHEMA_DIR, check_against
from reconciler.values import frozen

# Both files are a few lines; past this they are not what they claim to be.
MAX_HOST_FILE = 1024 * 1024
_MAX_VALUES = 10_000


@frozen
class HostConfig:
    bytecode_dirs: tuple[str, ...] = ()
    xdp_modes: dict[str, str] = field(default_factory=dict)  # interface name -> mode
    images: RegistrySettings = field(default_factory=RegistrySettings)
    containers: RuntimeConfig = field(default_factory=RuntimeConfig)  # who answers selectors


def _read(path: Path, what: str) -> Document | None:
    """The one YAML document of a host file, or None when the file is missing or empty."""
    source = f"the {what} {path}"
    try:
        raw = files.read_regular(path, MAX_HOST_FILE)
    except FileNotFoundError:
        return None
    except (files.NotReadable, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise _error(source, [f"{path}: cannot read the {what}: it {reason}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _error(
            source, [f"{path}:{line}: cannot read the {what}: not UTF-8 text ({e.reason})"]
        ) from None
    from reconciler.spec import yamlread  # PyYAML: only when there is a file to read

    try:
        docs = list(yamlread.read_documents(text, max_nodes=_MAX_VALUES))
    except yamlread.YamlError as e:
        raise _error(source, [f"{path}:{e.line}: {e.message}"]) from None
    docs = [d for d in docs if d.data is not None or d.problems]
    if len(docs) > 1:
        raise _error(source, [f"{path}:{docs[1].start_line}: the {what} must be one YAML document"])
    if not docs:
        return None
    read = docs[0]
    if read.problems:
        lines = [_line(path, p.line, format_path(p.path), p.message) for p in read.problems]
        raise _error(source, lines)
    return Document(path, str(path), 0, read.start_line, read.data, read.lines)


def _line(path: Path, line: int, field_path: str, message: str) -> str:
    return f"{path}:{line}: {field_path}: {message}" if field_path else f"{path}:{line}: {message}"


def _error(source: str, problems: list[str]) -> HostError:
    return HostError("\n".join(problems), source=source, problems=problems)


@functools.cache
def _config_validator() -> Any:
    from reconciler.spec.validator import ManifestValidator  # jsonschema: only with a config

    return ManifestValidator(json.loads((SCHEMA_DIR / "hostconfig.json").read_text()))


def read_host_config(path: Path) -> HostConfig:
    """The host config at ``path`` (nothing set when it is missing or empty)::

    bytecode_dirs: [/opt/bpf]        # where manifests may name bytecode by absolute path
    interfaces:
      eth0: {xdpmode: generic}       # auto | native | generic
    containers:                      # the runtime that resolves container selectors
      runtime: podman
      socket: /run/podman/podman.sock
    """
    doc = _read(path, "host config")
    if doc is None:
        return HostConfig()
    source = f"the host config {path}"
    if not isinstance(doc.data, dict):
        raise _error(
            source,
            [
                f"{path}:{doc.start_line}: the host config must be a mapping of settings, e.g. "
                "bytecode_dirs: [/opt/bpf]"
            ],
        )
    problems = check_against(_config_validator(), doc)
    if problems:
        raise _error(source, [str(p) for p in problems])
    bad = _bad_regexps(doc.data)
    if bad:
        raise _error(source, [f"{path}: {b}" for b in bad])
    interfaces = doc.data.get("interfaces") or {}
    modes = {
        str(name): settings["xdpmode"]
        for name, settings in interfaces.items()
        if isinstance(settings, dict) and settings.get("xdpmode") is not None
    }
    return HostConfig(
        tuple(doc.data.get("bytecode_dirs") or ()),
        modes,
        _registry_settings(doc.data),
        _runtime_config(doc.data),
    )


def _runtime_config(data: dict[str, Any]) -> RuntimeConfig:
    """The ``containers:`` section (checked against the schema); the runtime's usual socket
    when only the runtime is named."""
    section = data.get("containers") or {}
    runtime = section.get("runtime") or RuntimeConfig().runtime
    socket = section.get("socket") or DEFAULT_SOCKETS[runtime]
    return RuntimeConfig(runtime, socket)


def _registry_settings(data: dict[str, Any]) -> RegistrySettings:
    """The ``images:`` and ``signing:`` sections (already checked against the schema)."""
    images = data.get("images") or {}
    signing = data.get("signing") or {}

    def path(key: str) -> Path | None:
        return Path(images[key]) if images.get(key) else None

    return RegistrySettings(
        cache_dir=path("cache_dir"),
        auth_file=path("auth_file"),
        ca_bundle=path("ca_bundle"),
        insecure_registries=tuple(images.get("insecure_registries") or ()),
        mirrors={str(k): str(v) for k, v in (images.get("mirrors") or {}).items()},
        pull_secrets_dir=path("pull_secrets_dir") or DEFAULT_PULL_SECRETS_DIR,
        timeout=float(images["timeout"]) if images.get("timeout") is not None else None,
        require_signature=bool(signing.get("require")),
        signing_keys=tuple(Path(k) for k in signing.get("keys") or ()),
        signing_identities=tuple(
            Identity(i["issuer"], i.get("subject"), i.get("subjectRegExp"))
            for i in signing.get("identities") or ()
        ),
        trusted_root=Path(signing["trusted_root"]) if signing.get("trusted_root") else None,
    )


def _bad_regexps(data: dict[str, Any]) -> list[str]:
    out = []
    for n, identity in enumerate((data.get("signing") or {}).get("identities") or ()):
        pattern = identity.get("subjectRegExp")
        try:
            re.compile(pattern or "")
        except re.error as e:
            out.append(
                f"signing.identities[{n}].subjectRegExp {pattern!r} is not a regular "
                f"expression ({e}); e.g. https://github\\.com/example/.*"
            )
    return out


@functools.cache
def label_syntax() -> tuple[str, str]:
    """The label key and value patterns, from the schema every manifest's labels follow."""
    defs = json.loads((SCHEMA_DIR / "common.json").read_text())["$defs"]
    return defs["labelKey"]["pattern"], defs["labelValue"]["pattern"]


KEY_WORDS = (
    "[prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', e.g. "
    "topology.kubernetes.io/zone"
)
VALUE_WORDS = (
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def is_label_key(key: str) -> bool:
    return len(key) <= 317 and full_match(label_syntax()[0], key)


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and full_match(label_syntax()[1], value)


def read_labels_file(path: Path) -> dict[str, str]:
    """A flat YAML mapping of label keys to string values (none when the file is missing)."""
    doc = _read(path, "labels file")
    if doc is None:
        return {}
    source = f"the labels file {path}"
    if not isinstance(doc.data, dict):
        raise _error(
            source,
            [
                f"{path}:{doc.start_line}: the labels file must be a mapping of label keys to "
                "values, e.g. topology.kubernetes.io/zone: eu-west-1a"
            ],
        )
    problems = []
    labels: dict[str, str] = {}
    for key, value in doc.data.items():
        where = f"{path}:{doc.line_of((key,))}"
        if not isinstance(key, str):
            problems.append(f"{where}: a label key must be a string (quote it)")
        elif not is_label_key(key):
            problems.append(f"{where}: {key!r} is not a label key: {KEY_WORDS}")
        elif not isinstance(value, str):
            problems.append(
                f"{where}: label {key}: the value must be a string (quote numbers and booleans, "
                'e.g. "true"), not a nested value'
                if isinstance(value, dict | list)
                else f"{where}: label {key}: the value must be a string (quote numbers and "
                'booleans, e.g. "true")'
            )
        elif not is_label_value(value):
            problems.append(f"{where}: label {key}: {value!r} is not a label value: {VALUE_WORDS}")
        else:
            labels[key] = value
    if problems:
        raise _error(source, problems)
    return labels
