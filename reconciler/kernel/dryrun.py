"""The verifier's dry run: load a program exactly as install would, and release it at once.

Nothing is attached, pinned or mounted: maps that declare ``pinning = LIBBPF_PIN_BY_NAME`` get
no pin path (install pins them in its own staging dir, so they are always new there too), maps
already pinned in the program's shared maps directory are reused read-only (and checked for fit),
the others are created for the moment of the load. An XDP or TC program that runs behind a
dispatcher is verified as what the dispatcher runs: an extension (freplace) of a slot of a
freshly loaded, never attached, dispatcher.

``verdict_key`` names everything the verdict depends on, so that a verdict can be kept (plan and
apply keep them in the state dir, ``reconciler/plan/verdicts.py``) and a plan that loads the same
program again costs nothing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import ExitStack
from functools import cache
from pathlib import Path

from reconciler import files
from reconciler.kernel import maps, points, precheck
from reconciler.kernel.sys import bpf, libbpf
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.types import (
    AttachPoint,
    KernelError,
    ProgramSpec,
    ProgType,
)
from reconciler.kernel.xdp import proto as xdpproto

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CAP_SYS_ADMIN, _CAP_BPF = 21, 39
# The same bound as the manifests' bytecode: a key is never computed by reading more.
MAX_OBJECT_SIZE = 64 * 1024 * 1024


def verify(root: Path, spec: ProgramSpec, point: AttachPoint | None, dispatched: bool) -> None:
    """VerifierError if the kernel refuses ``spec`` (LoadNotPermitted if this process may not
    load programs; KernelError for what is wrong before the load: the function, the global
    data, a shared map that does not fit, a kernel that cannot run the type)."""
    precheck.object_file(spec)
    precheck.require_feature(spec)
    shared = maps.directory(root, spec.maps_dir) if spec.maps_dir is not None else None
    with ExitStack() as stack:
        disp_fd = _dispatcher(stack, spec.prog_type) if dispatched else None
        obj = stack.enter_context(LibbpfObject(spec.object_path))
        if disp_fd is not None:
            from reconciler.kernel.tc import dispatcher as tcdispatch
            from reconciler.kernel.xdp import dispatcher as xdpdispatch

            component = (
                xdpdispatch.prepare_component
                if spec.prog_type is ProgType.XDP
                else tcdispatch.prepare_component
            )
            component(obj, spec, disp_fd, "prog0")
        else:
            points.prepare(obj, spec, point)
        obj.clear_pin_paths()
        if shared is not None:
            maps.share(obj, shared, create=False)
        if points.KINDS[spec.prog_type].prog_type == bpf.PROG_TYPE_TRACING and not point:
            return  # verified at install, against the function the point names
        obj.load()


def shared_map_conflict(root: Path, spec: ProgramSpec, owner: ProgramSpec) -> str | None:
    """Why ``spec``'s maps would not fit those its map owner creates in their shared directory:
    a map not pinned there yet will be created by the owner, from the owner's definition (a map
    pinned already is checked against its pin by ``verify``). Opens both objects, loads nothing."""
    if spec.maps_dir is None or not os.path.isfile(owner.object_path):
        return None
    d = maps.directory(root, spec.maps_dir)
    with LibbpfObject(spec.object_path) as mine, LibbpfObject(owner.object_path) as theirs:
        declared = {m.pin_name: m for m in theirs.declared_maps() if not m.internal}
        for m in mine.declared_maps():
            if m.internal or m.pin_name not in declared or (d / m.pin_name).exists():
                continue
            diff = maps.shape_difference(declared[m.pin_name].shape, m.shape)
            if diff is not None:
                return (
                    f"its map {m.pin_name} does not fit the one its map owner creates from "
                    f"{owner.object_path}: that has {diff}; declare the map alike in both objects"
                )
    return None


def _dispatcher(stack: ExitStack, prog_type: ProgType) -> int:
    """A dispatcher of the kind ``prog_type`` runs behind, loaded for the moment (every slot has
    the same prototype, so slot 0 stands for all)."""
    from reconciler.kernel.tc import dispatcher as tcdispatch
    from reconciler.kernel.xdp import dispatcher as xdpdispatch

    if prog_type is ProgType.XDP:
        config = xdpproto.Config(1, (xdpproto.action_bits(()),), (xdpproto.DEFAULT_PRIORITY,))
        return xdpdispatch.load_dispatcher(stack, config)
    if prog_type is ProgType.TC:
        return tcdispatch.load_dispatcher(stack, [(0, ())])[1]
    raise KernelError(f"a {prog_type.value} program does not run behind a dispatcher")


def verdict_key(root: Path, spec: ProgramSpec, point: AttachPoint | None, dispatched: bool) -> str:
    tracing = points.KINDS[spec.prog_type].prog_type == bpf.PROG_TYPE_TRACING
    material = {
        "object": _digest(spec.object_path),
        "function": spec.function,
        "type": spec.prog_type.value,
        "global_data": [[name, value.hex()] for name, value in spec.global_data],
        "expected_attach": points.expected_attach(spec.prog_type, point),
        "attach_target": points.attach_target(point),
        "tracing_point": bool(point) if tracing else None,
        "dispatcher": _dispatcher_digest(spec.prog_type) if dispatched else None,
        "shared_maps": _shared_maps(root, spec.maps_dir),
        "kernel": identity(),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# sha256 of each object file read so far, by what stat says of it: a plan of many programs
# loaded from one object reads and hashes it once. Any write changes the file's ctime.
_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}


def _digest(path: str) -> str:
    try:
        st = os.stat(path)
        key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        found = _DIGESTS.get(key)
        if found is None:
            found = hashlib.sha256(files.read_regular(path, MAX_OBJECT_SIZE)).hexdigest()
            _DIGESTS[key] = found
        return found
    except (OSError, ValueError) as e:
        return f"unreadable: {e}"  # verify will say what is wrong; no verdict will match


def _dispatcher_digest(prog_type: ProgType) -> str:
    from reconciler.kernel.tc import dispatcher as tcdispatch

    obj = xdpproto.OBJECT if prog_type is ProgType.XDP else tcdispatch.DISPATCHER_OBJECT
    return f"{prog_type.value}:{_digest(str(obj))}"


def _shared_maps(root: Path, maps_dir: str | None) -> list[list[object]] | None:
    """The shape of every map pinned in the shared maps directory now: the dry run reuses them
    (their value sizes bound what the verifier lets the program read)."""
    if maps_dir is None:
        return None
    try:
        d = maps.directory(root, maps_dir)
        names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    except (OSError, KernelError) as e:
        return [["unreadable", str(e)]]
    out: list[list[object]] = []
    for name in names:
        try:
            with bpf.opened(bpf.obj_get(str(d / name))) as fd:
                m = bpf.map_info(fd)
            out.append([name, m.type, m.key_size, m.value_size, m.max_entries, m.flags])
        except OSError as e:
            out.append([name, "unreadable", e.errno])
    return out


@cache
def identity() -> str:
    """The kernel build (release, build string, machine), the libbpf in use and this boot."""
    u = os.uname()
    major, minor = libbpf.version()
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = "unknown"
    return f"{u.release} {u.version} {u.machine}; libbpf {major}.{minor}; boot {boot}"


def load_permission() -> str | None:
    """None when this process has CAP_SYS_ADMIN or CAP_BPF (needed to load programs); else why
    not, in words."""
    try:
        status = Path("/proc/self/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("CapEff:"))
        caps = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return None  # cannot tell: try, and let the kernel say
    if caps & (1 << _CAP_SYS_ADMIN | 1 << _CAP_BPF):
        return None
    return (
        f"bpfman runs as uid {os.geteuid()} without CAP_BPF or CAP_SYS_ADMIN, which loading a "
        f"program needs ({errno.errorcode[errno.EPERM]}); run it as root"
    )
