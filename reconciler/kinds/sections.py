"""What program an ELF section holds, by libbpf's section names, and which kinds can load it.

bpfman sets each program's type (and expected attach type) itself before loading, as upstream
bpfman does, so the section name does not decide how a program loads. It only tells what the
author meant: a section libbpf gives a program type (``SEC("xdp")``, ``SEC("tracepoint/...")``)
must be of the manifest's type, and one libbpf gives no type (``SEC("my_counter")``) is taken as
written. Families group the names libbpf loads as one program type and attach type, so that
every spelling of one is accepted (``tc``, ``tcx/ingress``, ``classifier/...`` all hold a TC
classifier) while an XDP function given as a tracepoint is an error.
"""

from __future__ import annotations

from reconciler.kinds.record import Sections
from reconciler.values import frozen

_SOCK_ADDR_CALLS = ("connect", "sendmsg", "recvmsg", "bind", "getpeername", "getsockname")


@frozen
class Family:
    words: str  # what a program there is: "a TC classifier"
    names: tuple[str, ...]  # each is the section, or its prefix before a '/'


_MULTI = "(bpfman does not attach multi-probe links yet)"

FAMILIES: dict[str, Family] = {
    "xdp": Family("an XDP program", ("xdp", "xdp.frags")),
    "xdp_devmap": Family(
        "an XDP program for a devmap (it runs on redirected frames, not on an interface)",
        ("xdp/devmap", "xdp.frags/devmap"),
    ),
    "xdp_cpumap": Family(
        "an XDP program for a cpumap (it runs on redirected frames, not on an interface)",
        ("xdp/cpumap", "xdp.frags/cpumap"),
    ),
    "sched_cls": Family("a TC classifier", ("tc", "tcx", "classifier", "netkit")),
    "sched_act": Family("a TC action", ("action",)),
    "tracepoint": Family("a tracepoint program", ("tracepoint", "tp")),
    "raw_tp": Family(
        "a raw tracepoint program", ("raw_tp", "raw_tracepoint", "raw_tp.w", "raw_tracepoint.w")
    ),
    "tp_btf": Family("a BTF tracepoint program", ("tp_btf",)),
    # One program type: a kprobe and a uprobe differ only in where they are attached.
    "kprobe": Family(
        "a kprobe or uprobe program",
        (
            "kprobe",
            "kretprobe",
            "uprobe",
            "uretprobe",
            "ksyscall",
            "kretsyscall",
        ),
    ),
    "usdt": Family("a USDT program (it needs libbpf's USDT argument tables)", ("usdt", "usdt.s")),
    "kprobe_multi": Family(
        f"a multi-probe program {_MULTI}",
        (
            "kprobe.multi",
            "kretprobe.multi",
            "uprobe.multi",
            "uretprobe.multi",
            "uprobe.multi.s",
            "uretprobe.multi.s",
            "kprobe.session",
            "uprobe.session",
            "uprobe.session.s",
        ),
    ),
    "fentry": Family("an fentry program", ("fentry",)),
    "fexit": Family("an fexit program", ("fexit",)),
    "fmod_ret": Family("an fmod_ret program", ("fmod_ret", "fmod_ret.s")),
    # Sleepable programs load with BPF_F_SLEEPABLE, which bpfman does not set.
    "sleepable": Family(
        "a sleepable program (bpfman does not load sleepable programs yet)",
        ("fentry.s", "fexit.s", "uprobe.s", "uretprobe.s", "lsm.s", "iter.s", "struct_ops.s"),
    ),
    "freplace": Family("an freplace extension", ("freplace",)),
    "lsm": Family("an LSM program", ("lsm", "lsm_cgroup")),
    "iter": Family("a BPF iterator", ("iter",)),
    "cgroup_skb": Family("a cgroup_skb program", ("cgroup_skb", "cgroup/skb")),
    "cgroup_sock_addr": Family(
        "a cgroup_sock_addr program",
        tuple(f"cgroup/{call}{v}" for v in ("4", "6", "_unix") for call in _SOCK_ADDR_CALLS),
    ),
    "cgroup_sock": Family(
        "a cgroup_sock program",
        (
            "cgroup/sock",
            "cgroup/sock_create",
            "cgroup/sock_release",
            "cgroup/post_bind4",
            "cgroup/post_bind6",
        ),
    ),
    "cgroup_other": Family(
        "a cgroup program",
        ("cgroup/dev", "cgroup/sysctl", "cgroup/getsockopt", "cgroup/setsockopt"),
    ),
    "sockops": Family("a sockops program", ("sockops",)),
    "sk": Family(
        "a socket program",
        ("sk_skb", "sk_msg", "sk_lookup", "sk_reuseport", "socket"),
    ),
    "perf_event": Family("a perf event program", ("perf_event",)),
    "struct_ops": Family("a struct_ops program", ("struct_ops",)),
    "syscall": Family("a syscall program", ("syscall",)),
    "netfilter": Family("a netfilter program", ("netfilter",)),
    "flow_dissector": Family("a flow dissector", ("flow_dissector",)),
    "lwt": Family(
        "a lightweight tunnel program", ("lwt_in", "lwt_out", "lwt_xmit", "lwt_seg6local")
    ),
    "lirc": Family("a lirc program", ("lirc_mode2",)),
}

# Longest first, so that xdp/devmap is not taken for xdp.
_BY_NAME = sorted(
    ((name, key) for key, fam in FAMILIES.items() for name in fam.names),
    key=lambda item: len(item[0]),
    reverse=True,
)


def family(section: str) -> str | None:
    """The family of ``section`` (``SEC("name")`` or ``SEC("name/...")``), or None when libbpf
    gives it no type."""
    for name, key in _BY_NAME:
        if section == name or section.startswith(name + "/"):
            return key
    return None


def describe(section: str) -> str:
    """What a program in ``section`` is, in words."""
    key = family(section)
    if key is None:
        return "a section libbpf gives no program type"
    return FAMILIES[key].words


def of(key: str, example: str) -> Sections:
    """The sections a kind loads: its family's, or any libbpf gives no type."""
    fam = FAMILIES[key]
    spelled = ", ".join(f"{n}[/...]" for n in fam.names[:4])
    more = ", ..." if len(fam.names) > 4 else ""
    expected = f"a section holding {fam.words} ({spelled}{more}) or one libbpf gives no type"
    return Sections(lambda section: family(section) in (None, key), expected, example, key)


# bpfman's image labels (io.ebpf.programs) name each program's type as upstream does: xdp, tc,
# tcx, tracepoint, kprobe, kretprobe, uprobe, uretprobe, fentry, fexit. One family may have
# several (tc and tcx are both TC classifiers), so a label fits a kind by family.
_LABEL_FAMILY = {
    "xdp": "xdp",
    "tc": "sched_cls",
    "tcx": "sched_cls",
    "classifier": "sched_cls",
    "tracepoint": "tracepoint",
    "kprobe": "kprobe",
    "kretprobe": "kprobe",
    "uprobe": "kprobe",
    "uretprobe": "kprobe",
    "fentry": "fentry",
    "fexit": "fexit",
}


def label_family(label: str) -> str | None:
    """The family of a program type as an image's labels spell it (any case), or None."""
    return _LABEL_FAMILY.get(label.lower().replace("_", ""))


def label_type(section: str) -> str | None:
    """The type an image's labels give a program in ``section`` (as upstream's images name
    them), or None for a section of a type bpfman does not load."""
    key = family(section)
    head = section.split("/")[0]
    if key == "sched_cls":
        return "tcx" if head == "tcx" else "tc"
    if key == "kprobe":  # a return probe is labelled by what it probes, as before
        return "uprobe" if head.startswith(("uprobe", "uretprobe")) else "kprobe"
    return key if key in ("xdp", "tracepoint", "fentry", "fexit") else None
