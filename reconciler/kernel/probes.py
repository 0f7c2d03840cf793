"""Feature probes: can this kernel do X? Each returns a ``Probe`` (truthy if supported) with a
reason a plan can print ("tcx links need Linux 6.6+: ..."). Results are cached per process.

Probes load the smallest program that exercises the feature the way bpfman would use it (for
fentry: a tracing program aimed at a real kernel function; for freplace: an extension program
aimed at a function of another loaded program), release it at once and never attach anything.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

from reconciler.kernel.sys import bpf
from reconciler.kernel.types import Probe

FEATURES = (
    "tcx",
    "perf_link",
    "kprobe",
    "uprobe",
    "tracepoint",
    "fentry",
    "fexit",
    "freplace",
    "cgroup_link",
)

PMU_DIR = Path("/sys/bus/event_source/devices")
# Kernel functions a fentry/fexit probe may aim at: bpf_fentry_test1 exists for exactly this
# (net/bpf/test_run.c); the others are common fallbacks.
_FENTRY_TARGETS = ("bpf_fentry_test1", "__x64_sys_getpid", "__arm64_sys_getpid", "vfs_read")

# r0 = 0; exit
_RET0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_LOG_SIZE = 1 << 16


class _LoadFailed(OSError):
    def __init__(self, err: int, log: str) -> None:
        super().__init__(err, os.strerror(err))
        self.log = log

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.log.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def _prog_load(
    prog_type: int,
    expected_attach_type: int = 0,
    *,
    attach_btf_id: int = 0,
    attach_prog_fd: int = 0,
    btf_fd: int = 0,
    func_type_id: int = 0,
    log: bool = False,
) -> int:
    """BPF_PROG_LOAD of ``r0 = 0; exit``: prog_type@0 insn_cnt@4 insns@8 license@16
    log_level@24 log_size@28 log_buf@32 prog_name@48 expected_attach_type@68 prog_btf_fd@72
    func_info_rec_size@76 func_info@80 func_info_cnt@88 attach_btf_id@108
    attach_prog_fd (or attach_btf_obj_fd; 0 = vmlinux)@112."""
    insns = ctypes.create_string_buffer(_RET0, len(_RET0))
    license_ = ctypes.create_string_buffer(b"GPL")
    log_buf = ctypes.create_string_buffer(_LOG_SIZE if log else 1)
    func_info = ctypes.create_string_buffer(struct.pack("=II", 0, func_type_id), 8)
    attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
    struct.pack_into("=IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insns),
                     ctypes.addressof(license_))  # fmt: skip
    if log:
        struct.pack_into("=IIQ", attr, 24, 1, _LOG_SIZE, ctypes.addressof(log_buf))
    struct.pack_into("=16s", attr, 48, b"bpfman_probe")
    struct.pack_into("=I", attr, 68, expected_attach_type)
    if btf_fd:
        struct.pack_into("=IIQI", attr, 72, btf_fd, 8, ctypes.addressof(func_info), 1)
    struct.pack_into("=II", attr, 108, attach_btf_id, attach_prog_fd)
    try:
        return bpf.sys_bpf(bpf.PROG_LOAD, attr)
    except OSError as e:
        raise _LoadFailed(e.errno or errno.EINVAL, log_buf.value.decode(errors="replace")) from e


def _load_trivial(prog_type: int, expected_attach_type: int = 0) -> int:
    return _prog_load(prog_type, expected_attach_type)


def _refused(feature: str, what: str, e: OSError) -> Probe:
    """A Probe saying the kernel refused a load, quoting the errno (and the verifier's last
    word, if any)."""
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    detail = e.last_line if isinstance(e, _LoadFailed) else ""
    why = {
        errno.EPERM: "the kernel does not permit it",
        errno.EACCES: "the kernel does not permit it",
        errno.EINVAL: "the kernel does not know it",
        524: "the kernel or this architecture does not support it",  # ENOTSUPP, kernel-internal
    }.get(e.errno or 0, "")
    reason = f"loading {what} fails with {code} ({e.strerror})"
    reason += f": {why}" if why else ""
    reason += f" [verifier: {detail}]" if detail else ""
    return Probe(feature, False, reason)


@cache
def prog_type_supported(prog_type: int) -> Probe:
    """Whether programs of ``prog_type`` (a bpf.PROG_TYPE_* number) load at all."""
    name = bpf.PROG_TYPES[prog_type] if prog_type < len(bpf.PROG_TYPES) else str(prog_type)
    try:
        os.close(_load_trivial(prog_type))
    except OSError as e:
        if e.errno == errno.EPERM:
            return Probe(
                name, False, f"this kernel does not permit loading {name} programs (EPERM)"
            )
        return Probe(name, False, f"this kernel cannot load {name} programs ({e.strerror})")
    return Probe(name, True, f"{name} programs load")


@cache
def tcx_supported() -> Probe:
    """tcx (multi-program tc links with revisions), Linux 6.6+: a BPF_PROG_QUERY of the tcx
    ingress hook of lo succeeds only on kernels that know the attach type."""
    try:
        bpf.prog_query_tcx(1, bpf.TCX_INGRESS)  # ifindex 1 is lo in every namespace
    except OSError as e:
        if e.errno == errno.EPERM:
            return Probe("tcx", False, "querying tcx needs root (CAP_NET_ADMIN)")
        return Probe("tcx", False, f"tcx links need Linux 6.6+ ({e.strerror})")
    return Probe("tcx", True, "tcx links are supported")


@cache
def perf_link_supported() -> Probe:
    """bpf_link for perf events (tracepoints, uprobes, kprobes), Linux 5.15+: creating one with
    a bad perf-event fd fails with EBADF on kernels that support it, EINVAL otherwise."""
    try:
        prog_fd = _load_trivial(bpf.PROG_TYPE_TRACEPOINT)
    except OSError as e:
        return Probe("perf_link", False, f"cannot load a tracepoint program ({e.strerror})")
    try:
        attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
        struct.pack_into("=IiI", attr, 0, prog_fd, -1, bpf.ATTACH_PERF_EVENT)
        try:
            os.close(bpf.sys_bpf(bpf.LINK_CREATE, attr))
        except OSError as e:
            if e.errno == errno.EBADF:
                return Probe("perf_link", True, "perf-event links are supported")
            return Probe("perf_link", False, f"perf-event links need Linux 5.15+ ({e.strerror})")
        return Probe("perf_link", True, "perf-event links are supported")
    finally:
        os.close(prog_fd)


def kernel_config(option: str) -> str | None:
    """The value of ``option`` (e.g. CONFIG_KPROBES) in the running kernel's config: "y", "m",
    "n" (not set), or None when no config is readable (/proc/config.gz, /boot/config-*)."""
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            text = Path(f"/boot/config-{os.uname().release}").read_text()
        except OSError:
            return None
    for line in text.splitlines():
        if line.startswith(option + "="):
            return line.split("=", 1)[1].strip('"')
        if line == f"# {option} is not set":
            return "n"
    return "n"


def _probe_pmu(feature: str, pmu: str, config: str) -> Probe:
    """kprobes and uprobes: kprobe-type programs load, and the kernel has the PMU libbpf
    creates the probes with (perf_event_open; Linux 4.17+)."""
    loads = prog_type_supported(bpf.PROG_TYPE_KPROBE)
    if not loads:
        return Probe(feature, False, loads.reason)
    if (PMU_DIR / pmu / "type").is_file():
        return Probe(feature, True, f"{feature} programs load and the {pmu} PMU exists")
    where = f"no {pmu} PMU at {PMU_DIR / pmu}"
    if kernel_config(config) == "n":
        return Probe(
            feature, False, f"{feature}s are not configured ({config} is not set): {where}"
        )
    return Probe(feature, False, f"this kernel has {where} ({config} unset, or Linux < 4.17)")


@cache
def kprobe_supported() -> Probe:
    return _probe_pmu("kprobe", "kprobe", "CONFIG_KPROBES")


@cache
def uprobe_supported() -> Probe:
    return _probe_pmu("uprobe", "uprobe", "CONFIG_UPROBE_EVENTS")


@cache
def tracepoint_supported() -> Probe:
    from reconciler.kernel.sys import tracefs
    from reconciler.kernel.types import KernelError

    loads = prog_type_supported(bpf.PROG_TYPE_TRACEPOINT)
    if not loads:
        return Probe("tracepoint", False, loads.reason)
    try:
        tracefs.ensure_mounted()  # libbpf resolves tracepoint ids through tracefs
    except KernelError as e:
        return Probe("tracepoint", False, str(e))
    return Probe("tracepoint", True, "tracepoint programs load and tracefs is mounted")


def _fentry_target() -> tuple[str, int] | None:
    from reconciler.kernel.sys import btfinfo

    for name in _FENTRY_TARGETS:
        type_id = btfinfo.kernel_function_id(name)
        if type_id is not None:
            return name, type_id
    return None


@cache
def tracing_supported(feature: str) -> Probe:
    """fentry or fexit: load a tracing program aimed at a kernel function found in vmlinux BTF
    (which is what libbpf does for ours), with the matching expected attach type."""
    from reconciler.kernel.sys import btfinfo

    if not btfinfo.has_kernel_btf():
        why = "this kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)"
        return Probe(feature, False, f"{why}, which fentry/fexit need")
    target = _fentry_target()
    if target is None:
        names = ", ".join(_FENTRY_TARGETS)
        return Probe(feature, False, f"none of the probe's target functions ({names}) in BTF")
    name, type_id = target
    attach = bpf.TRACE_FENTRY if feature == "fentry" else bpf.TRACE_FEXIT
    try:
        fd = _prog_load(bpf.PROG_TYPE_TRACING, attach, attach_btf_id=type_id, log=True)
    except OSError as e:
        return _refused(feature, f"a {feature} program (on {name})", e)
    os.close(fd)
    return Probe(feature, True, f"{feature} programs load (probed on {name})")


def _btf_blob() -> bytes:
    """A minimal BTF: [1] int, [2] int (void), [3] global function "bpfman_probe" of type 2."""
    strings = b"\0int\0bpfman_probe\0"
    types = struct.pack("=IIII", 1, 1 << 24, 4, (1 << 24) | 32)  # INT "int": 4 bytes, signed
    types += struct.pack("=III", 0, 13 << 24, 1)  # FUNC_PROTO returning [1], no parameters
    types += struct.pack("=III", 5, (12 << 24) | 1, 2)  # FUNC "bpfman_probe", linkage global
    header = struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def _btf_load(blob: bytes) -> int:
    """BPF_BTF_LOAD: btf@0 btf_log_buf@8 btf_size@16 btf_log_size@20 btf_log_level@24."""
    data = ctypes.create_string_buffer(blob, len(blob))
    attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
    struct.pack_into("=QQI", attr, 0, ctypes.addressof(data), 0, len(blob))
    return bpf.sys_bpf(bpf.BTF_LOAD, attr)


@cache
def freplace_supported() -> Probe:
    """freplace (BPF_PROG_TYPE_EXT), what XDP dispatchers are built on: load an XDP program with
    BTF, then an extension program replacing its (global) function."""
    fds: list[int] = []
    try:
        try:
            fds.append(_btf_load(_btf_blob()))
        except OSError as e:
            return Probe("freplace", False, f"this kernel cannot load BTF ({e.strerror})")
        try:
            fds.append(_prog_load(bpf.PROG_TYPE_XDP, btf_fd=fds[0], func_type_id=3))
        except OSError as e:
            return _refused("freplace", "an XDP program with BTF (the extension's target)", e)
        try:
            fds.append(
                _prog_load(
                    bpf.PROG_TYPE_EXT,
                    attach_btf_id=3,
                    attach_prog_fd=fds[1],
                    btf_fd=fds[0],
                    func_type_id=3,
                    log=True,
                )
            )
        except OSError as e:
            return _refused("freplace", "an extension (freplace) program", e)
        return Probe("freplace", True, "extension (freplace) programs load")
    finally:
        for fd in reversed(fds):
            os.close(fd)


@cache
def cgroup_link_supported() -> Probe:
    """cgroup_skb programs attached with BPF_LINK_CREATE (cgroup links), Linux 5.7+: creating
    one with a bad cgroup fd fails with EBADF on kernels that support it, EINVAL otherwise."""
    try:
        prog_fd = _load_trivial(bpf.PROG_TYPE_CGROUP_SKB, bpf.CGROUP_INET_INGRESS)
    except OSError as e:
        return _refused("cgroup_link", "a cgroup_skb program", e)
    try:
        attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
        struct.pack_into("=IiI", attr, 0, prog_fd, -1, bpf.CGROUP_INET_INGRESS)
        try:
            os.close(bpf.sys_bpf(bpf.LINK_CREATE, attr))
        except OSError as e:
            if e.errno == errno.EBADF:
                return Probe("cgroup_link", True, "cgroup links are supported")
            return Probe("cgroup_link", False, f"cgroup links need Linux 5.7+ ({e.strerror})")
        return Probe("cgroup_link", True, "cgroup links are supported")
    finally:
        os.close(prog_fd)


_PROBES: dict[str, Callable[[], Probe]] = {
    "tcx": tcx_supported,
    "perf_link": perf_link_supported,
    "kprobe": kprobe_supported,
    "uprobe": uprobe_supported,
    "tracepoint": tracepoint_supported,
    "fentry": lambda: tracing_supported("fentry"),
    "fexit": lambda: tracing_supported("fexit"),
    "freplace": freplace_supported,
    "cgroup_link": cgroup_link_supported,
}


# Answers of this process, and answers remembered from an earlier run on the same kernel build
# and boot (see ``remember``): a probe loads programs, and a plan that changes nothing must not.
_answers: dict[str, Probe] = {}


def probe(feature: str) -> Probe:
    """The probe of ``feature`` (one of FEATURES); ValueError for a name no probe knows."""
    fn = _PROBES.get(feature)
    if fn is None:
        raise ValueError(f"no probe for feature {feature!r}; known: {', '.join(FEATURES)}")
    found = _answers.get(feature)
    if found is None:
        found = _answers[feature] = fn()
    return found


def answered() -> dict[str, Probe]:
    """Every feature probed (or remembered) by this process so far."""
    return dict(_answers)


def forget() -> None:
    """Probe again from now on (tests)."""
    _answers.clear()


def remember(answers: dict[str, Probe]) -> None:
    """Take ``answers`` (from an earlier run on this kernel build and boot, by a process that
    could load programs) as this process's, without probing again."""
    for feature, answer in answers.items():
        if feature in _PROBES and answer.feature == feature:
            _answers.setdefault(feature, answer)


def bpf_link_supported(point_kind: str) -> Probe:
    """Whether the bpf_link kind an attach point kind needs exists ("tcx", "tracepoint",
    "uprobe", "kprobe", "fentry", "fexit"; "xdp" attaches over netlink and needs none)."""
    if point_kind == "tcx":
        return tcx_supported()
    if point_kind in ("tracepoint", "uprobe", "kprobe"):
        return perf_link_supported()
    if point_kind in ("fentry", "fexit"):
        return tracing_supported(point_kind)
    if point_kind == "cgroup":
        return cgroup_link_supported()
    if point_kind == "xdp":
        return Probe("xdp", True, "XDP attaches over netlink (no bpf_link needed)")
    return Probe(point_kind, False, f"no probe for {point_kind!r}")
