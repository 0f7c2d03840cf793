"""The last no-op plan, remembered: when nothing it was made from has changed, `bpfman plan` (and
an `apply` or a watcher reconcile with nothing to do) answer it again without reading a manifest
or observing the kernel.

A plan is a function of: the manifests (their bytes), the bytecode they name (its bytes), the
host's files and facts (config, labels, interfaces, libraries: every HostFacts answer the
manifests asked for), the state file (and a pending journal), the kernel (the fingerprint of
``Kernel.fingerprint``: pins, links, and the netlink view of the namespaces in play), the
arguments and bpfman itself (its version and the stamp of its code and schemas). The entry keeps
each of these as it was measured *before* the plan was made; a lookup measures them again, in
order of cost, and any difference is a miss. So a change made while a plan was being computed
can only make the next lookup miss, never hit with a stale answer.

Only clean plans are kept: no changes, no errors, no warnings, no drift, and no --target,
--exclude, --refresh-only or --out. A plan with something to do is worth computing again; the
watcher's idle reconciles and CI's repeated plans are the ones that pay for themselves here.

The entry lives at ``<state-dir>/cache/plan.json``, written atomically; deleting the directory
is always safe (the next plan is computed in full).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reconciler import __version__, files
from reconciler.kernel.types import Kernel
from reconciler.plan.value import Plan
from reconciler.spec.host import HostError, HostFacts
from reconciler.spec.loader import WalkError, find_sources, read_manifest_bytes
from reconciler.spec.model import DesiredState
from reconciler.state import JOURNAL_FILE, STATE_FILE

CACHE_DIR = "cache"
PLAN_FILE = "plan.json"
FORMAT = 2
# Bytecode is hashed to compare it; the same bound as the manifests' bytecode.
MAX_OBJECT_SIZE = 64 * 1024 * 1024
_PACKAGE = Path(__file__).resolve().parent  # code, schemas and dispatchers


@functools.cache
def code_stamp() -> str:
    """bpfman's version and the size and mtime of every file of its code and schemas: an
    upgrade, or an edit of a checkout, makes every entry a miss. Taken once per process: it
    stands for the code this process runs, which a later edit on disk does not change (a
    watcher would otherwise walk the package on every reconcile)."""
    h = hashlib.sha256(__version__.encode())
    for top in (_PACKAGE,):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".json", ".o")):
                    st = os.stat(os.path.join(dirpath, name))
                    h.update(f"{dirpath}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class RecordingHost:
    """A HostFacts that answers from ``host`` and remembers every question and answer, so that
    a lookup can ask the same questions and compare."""

    def __init__(self, host: HostFacts) -> None:
        self._host = host
        self.calls: list[tuple[str, list[Any], Any]] = []

    def _ask(self, name: str, *args: Any) -> Any:
        try:
            answer = getattr(self._host, name)(*args)
        except HostError as e:
            self.calls.append((name, list(args), {"error": str(e)}))
            raise
        self.calls.append((name, list(args), answer))
        return answer

    def labels(self) -> dict[str, str]:
        return dict(self._ask("labels"))

    def primary_interface(self) -> str | None:
        return self._ask("primary_interface")

    def interfaces(self, netns: str | None = None) -> list[str]:
        return list(self._ask("interfaces", netns))

    def resolve_library(self, name: str, container_pid: int | None = None) -> str | None:
        return self._ask("resolve_library", name, container_pid)

    def xdp_mode(self, ifname: str, netns: str | None = None) -> str | None:
        return self._ask("xdp_mode", ifname, netns)

    def bytecode_dirs(self) -> list[str] | None:
        answer = self._ask("bytecode_dirs")
        return None if answer is None else list(answer)

    def bytecode_image(self, url: str, policy: str, secret: str | None) -> dict[str, Any]:
        return dict(self._ask("bytecode_image", url, policy, secret))

    def containers(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        # Recorded like any answer: a container started or stopped (or restarted, with a new
        # pid) since the plan was remembered makes the lookup miss.
        return [dict(c) for c in self._ask("containers", selector)]


def _same_answers(host: HostFacts, calls: list[Any]) -> bool:
    for name, args, answer in calls:
        try:
            now: Any = getattr(host, name)(*args)
        except HostError as e:
            now = {"error": str(e)}
        # Through JSON, as stored: tuples become lists, dict order is kept.
        if json.loads(json.dumps(now)) != answer:
            return False
    return True


def _file_digest(path: str, limit: int) -> str | None:
    try:
        return hashlib.sha256(files.read_regular(path, limit)).hexdigest()
    except (OSError, ValueError):
        return None


def manifests_digest(
    root: Path, read: Iterable[str] = (), digests: Callable[[str], bytes | None] | None = None
) -> str | None:
    """The names and bytes of every manifest file under ``root``, of the kustomization of each
    directory read through one, and of the files those kustomizations ``read`` (recorded when
    the manifests were loaded: they may lie outside ``root``, e.g. a base in ../base; a
    kustomization that now reads other files has itself changed, or one it reads has). None
    when the walk or a read fails (the full load then says why). ``digests``: the SHA-256 of
    each file as the load that the plan is made from read it (a file it has is not read again).
    """
    from reconciler.spec.kustomize import kustomization_in

    h = hashlib.sha256()
    try:
        paths, kustomized = find_sources(root)
        tops = [k for k in map(kustomization_in, kustomized) if k is not None]
        for path in sorted({*paths, *tops, *map(Path, read)}):
            digest = digests(str(path)) if digests is not None else None
            if digest is None:
                digest = hashlib.sha256(read_manifest_bytes(path)).digest()
            name = os.fsencode(os.path.relpath(path, root))
            h.update(len(name).to_bytes(4, "little") + name)
            h.update(digest)
    except (WalkError, OSError, ValueError):
        return None
    return h.hexdigest()


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _under(path: str, root: Path) -> str:
    """``path`` relative to the source root when inside it ("./" marks it): a git source is a
    new checkout every time, and its files must still compare equal."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else f"./{rel}"


def _resolve(key: str, root: Path) -> str:
    return str(root / key[2:]) if key.startswith("./") else key


def _dependencies(desired: DesiredState, root: Path) -> tuple[dict[str, str | None], list[str]]:
    """(bytecode files with their SHA-256 as expanded, other host paths the attach points name:
    cgroups, uprobe targets)."""
    objects: dict[str, str | None] = {}
    paths: set[str] = set()
    for d in desired.attachments:
        # The digest expand took of the bytes the plan is made from, not a later read's.
        digest = d.bytecode_digest
        objects[_under(str(d.program.object_path), root)] = (
            digest.removeprefix("sha256:") if digest.startswith("sha256:") else None
        )
        if dataclasses.is_dataclass(d.point):
            for f in dataclasses.fields(d.point):
                value = getattr(d.point, f.name)
                if isinstance(value, str) and value.startswith("/") and f.name != "netns":
                    paths.add(value)
    return dict(sorted(objects.items())), sorted(paths)


def namespaces_in_play(desired: DesiredState | None, records: Iterable[Any]) -> list[str | None]:
    """Namespaces whose interfaces the plan depends on: those of interface-bound attach points
    and of records that name an interface."""
    out: set[str | None] = set()
    for d in desired.attachments if desired else ():
        if getattr(d.point, "ifname", None):
            out.add(getattr(d.point, "netns", None))
    for r in records:
        recorded = r.extra.get("attach") or {}
        if recorded.get("ifname") or r.attributes.get("interface"):
            out.add(recorded.get("netns") or r.attributes.get("netns"))
    return sorted(out, key=lambda n: n or "")


def state_digest(state_dir: Path) -> str:
    h = hashlib.sha256()
    for name in (STATE_FILE, JOURNAL_FILE):
        try:
            h.update(name.encode() + b"\0" + (Path(state_dir) / name).read_bytes())
        except FileNotFoundError:
            h.update(name.encode() + b"\0absent")
    return h.hexdigest()


@dataclasses.dataclass
class Measured:
    """What a plan is about to be made from, measured before it is made."""

    args: dict[str, Any]
    manifests: str
    kustomized_files: list[str]
    state: str
    kernel: str
    namespaces: list[str | None]
    host_calls: list[Any]
    objects: dict[str, str | None]
    paths: dict[str, list[int] | None]


class PlanCache:
    """``name``: one entry per caller (the CLI's plans, the watcher's reconciles), since they
    keep different outputs."""

    def __init__(self, state_dir: Path, args: dict[str, Any], name: str = PLAN_FILE) -> None:
        self.dir = Path(state_dir) / CACHE_DIR
        self.state_dir = Path(state_dir)
        self.args = {**args, "code": code_stamp()}
        self.name = name

    # --- lookup ---------------------------------------------------------------------------------

    def lookup(
        self, root: Path, base: Path, host: HostFacts, kernel: Kernel
    ) -> dict[str, Any] | None:
        """The outputs of the remembered plan when every input is as it was; None otherwise.
        ``root`` is where the manifests are, ``base`` the whole source (a checkout's top)."""
        try:
            entry = json.loads((self.dir / self.name).read_text())
        except (OSError, ValueError):
            return None
        checks: list[Callable[[], bool]] = [
            lambda: entry.get("format") == FORMAT and entry.get("args") == self.args,
            lambda: entry.get("state") == state_digest(self.state_dir),
            lambda: (
                entry.get("manifests") == manifests_digest(root, entry.get("kustomized_files", []))
            ),
            lambda: all(
                _file_digest(_resolve(p, base), MAX_OBJECT_SIZE) == d
                for p, d in entry["objects"].items()
            ),
            lambda: all(_stat_key(p) == k for p, k in entry["paths"].items()),
            lambda: _same_answers(host, entry["host_calls"]),
            lambda: kernel.fingerprint(entry["namespaces"]) == entry["kernel"],
        ]
        try:
            if all(check() for check in checks):
                outputs: dict[str, Any] = entry["outputs"]
                return outputs
        except (KeyError, TypeError, AttributeError, ValueError):
            pass  # an entry of another shape: recompute
        return None

    # --- remembering ----------------------------------------------------------------------------

    def measure(
        self,
        root: Path,
        base: Path,
        host: RecordingHost,
        desired: DesiredState,
        kernel: Kernel,
        records: Iterable[Any],
        more_namespaces: Iterable[str | None] = (),
        digests: Callable[[str], bytes | None] | None = None,
    ) -> Measured | None:
        """Measure the inputs of the plan about to be made (call before observing).
        ``more_namespaces``: others whose interfaces matter (the watcher's waiting ones);
        ``digests``: the manifests' digests as the load read them (``manifests_digest``)."""
        manifests = manifests_digest(root, desired.read_files, digests)
        if manifests is None:
            return None
        objects, paths = _dependencies(desired, base)
        namespaces = sorted(
            set(namespaces_in_play(desired, records)) | set(more_namespaces),
            key=lambda n: n or "",
        )
        return Measured(
            args=self.args,
            manifests=manifests,
            kustomized_files=list(desired.read_files),
            state=state_digest(self.state_dir),
            kernel=kernel.fingerprint(namespaces),
            namespaces=namespaces,
            host_calls=json.loads(json.dumps(host.calls)),
            objects={
                p: d if d is not None else _file_digest(_resolve(p, base), MAX_OBJECT_SIZE)
                for p, d in objects.items()
            },
            paths={p: _stat_key(p) for p in paths},
        )

    def remember(
        self, measured: Measured | None, plan: Plan, outputs: Callable[[], dict[str, Any]]
    ) -> None:
        """Keep ``plan``'s outputs if it is clean; otherwise drop any entry (it is stale).
        ``outputs`` is called only for a clean plan: rendering a plan of 1000 changes in every
        format costs more than a tenth of its plan."""
        clean = not (plan.has_changes or plan.errors or plan.warnings or plan.drift)
        clean = clean and not plan.targeted and not plan.destroy
        path = self.dir / self.name
        if measured is None or not clean:
            with contextlib.suppress(OSError):
                path.unlink()
            return
        entry = {"format": FORMAT, **dataclasses.asdict(measured), "outputs": outputs()}
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            tmp = self.dir / f".{self.name}.{os.getpid()}"
            tmp.write_text(json.dumps(entry))
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only costs the next plan its full time
