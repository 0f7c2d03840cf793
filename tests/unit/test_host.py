"""reconciler.hostfacts.Host: labels, the default route, interfaces and library resolution."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from reconciler.hostfacts import (
    CacheEntry,
    Host,
    builtin_labels,
    default_route_interface,
    library_dirs,
    parse_label,
    read_labels_file,
    read_ld_so_cache,
    resolve_library,
)
from reconciler.spec import HostError, HostFacts
from tests.unit.spec_support import StubHost

# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("aarch64", "arm64"),
        ("armv7l", "arm"),
        ("i686", "386"),
        ("riscv64", "riscv64"),
        ("sparc64", "sparc64"),
    ],
)
def test_builtin_labels_are_the_kubelets(machine: str, arch: str) -> None:
    assert builtin_labels(nodename="Web1.Example.COM", machine=machine) == {
        "kubernetes.io/hostname": "web1.example.com",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
    }


def test_labels_file_then_flags_win(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.yaml"
    labels_file.write_text(
        "# this host\n"
        "topology.kubernetes.io/zone: eu-west-1a\n"
        "role: web\n"
        "kubernetes.io/hostname: web1\n"
        'gpu: "true"\n'
    )
    host = Host(labels_file, {"role": "db", "rack": "r7"})
    labels = host.labels()
    assert labels == {
        "kubernetes.io/hostname": "web1",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": builtin_labels()["kubernetes.io/arch"],
        "topology.kubernetes.io/zone": "eu-west-1a",
        "role": "db",
        "gpu": "true",
        "rack": "r7",
    }
    labels["role"] = "changed"
    assert host.labels()["role"] == "db"  # a copy each time


def test_label_flags() -> None:
    assert parse_label("topology.kubernetes.io/zone=eu-1a") == (
        "topology.kubernetes.io/zone",
        "eu-1a",
    )
    assert parse_label("edge=") == ("edge", "")
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_label("zone")
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_label("bad key=x")
    with pytest.raises(ValueError, match="'a b' is not a label value"):
        parse_label("zone=a b")


def test_no_labels_file(tmp_path: Path) -> None:
    assert Host(tmp_path / "missing.yaml").labels() == builtin_labels()
    assert Host(None, {"a": "b"}).labels() == {**builtin_labels(), "a": "b"}
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert read_labels_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zone: a\nrole: [web\n", ":3: YAML syntax error"),
        ("- zone\n", ":1: the labels file must be a mapping of label keys to values"),
        ("zone: a\nreplicas: 3\n", ":2: label replicas: the value must be a string (quote numbers"),
        ("zone: a\nweb: true\n", ":2: label web: the value must be a string"),
        ("zone: {a: b}\n", ":1: label zone: the value must be a string"),
        ("zone: a\n'bad key': x\n", ":2: 'bad key' is not a label key"),
        ("zone: eu west\n", ":1: label zone: 'eu west' is not a label value"),
        ("zone: a\nzone: b\n", ":2: zone: duplicate key 'zone' (first set at line 1)"),
        ("zone: on\n", ":1: zone: on is ambiguous: YAML 1.1 readers"),
        ('zone: "a\\x1b[2J"\n', ":1: zone: the value 'a\\x1b[2J' contains the control character"),
        ("1: a\n", ":1: a label key must be a string (quote it)"),
    ],
)
def test_a_malformed_labels_file_names_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    with pytest.raises(HostError) as info:
        Host(path).labels()
    assert str(info.value).startswith(f"{path}{message}"), str(info.value)


def test_an_unreadable_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.yaml"
    path.write_bytes(b"zone: \xff\n")
    with pytest.raises(HostError, match=r"labels.yaml:1: cannot read the labels file: not UTF-8"):
        read_labels_file(path)
    with pytest.raises(HostError, match="cannot read the labels file"):
        read_labels_file(tmp_path)  # a directory


# --- the default route and interfaces ---------------------------------------------------------

ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)


def test_default_route_picks_the_lowest_metric(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(
        ROUTE_HEADER
        + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        + "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        + "eth1\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
        + "down0\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert default_route_interface(route, tmp_path / "none") == "eth0"


def test_default_route_falls_back_to_ipv6(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(ROUTE_HEADER)
    ipv6 = tmp_path / "ipv6_route"
    z = "0" * 32
    gateway = "fe80" + "0" * 27 + "1"
    ipv6.write_text(
        # dest dest_len src src_len next_hop metric refcnt use flags iface
        f"{z} 00 {z} 00 {gateway} 00000400 00000001 00000000 00450003 ens5\n"
        f"{z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200       lo\n"
        f"fd00{z[4:]} 40 {z} 00 {z} 00000100 00000001 00000000 00000001 ens6\n"
    )
    assert default_route_interface(route, ipv6) == "ens5"


def test_no_default_route(tmp_path: Path) -> None:
    assert default_route_interface(tmp_path / "missing", tmp_path / "missing6") is None
    garbage = tmp_path / "garbage"
    garbage.write_text("header\nnot a route table at all zz zz zz zz zz\n")
    assert default_route_interface(garbage, garbage) is None


def test_interfaces_of_this_namespace() -> None:
    assert "lo" in Host().interfaces()


def test_interfaces_of_a_namespace_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=f"network namespace {tmp_path}/nope does not exist; "):
        Host().interfaces(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("not a namespace")
    with pytest.raises(HostError, match=f"{tmp_path}/file"):
        Host().interfaces(str(tmp_path / "file"))


def test_host_is_host_facts() -> None:
    facts: HostFacts = Host(None)
    assert facts.labels()["kubernetes.io/os"] == "linux"


def test_the_real_host_and_the_stub_answer_every_question() -> None:
    """No host fact is optional: expansion asks them all without looking first."""
    questions = {name for name in vars(HostFacts) if not name.startswith("_")}
    assert {"labels", "xdp_mode", "bytecode_dirs"} <= questions
    for double in (Host, StubHost):
        assert questions <= {n for n in dir(double) if callable(getattr(double, n))}, double


# --- ld.so.cache ------------------------------------------------------------------------------

X86_64 = 0x0303  # FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
I386 = 0x0003  # FLAG_ELF_LIBC6


def new_cache(entries: list[tuple[int, str, str, int]]) -> bytes:
    """glibc-ld.so.cache1.1: a 48-byte header, 24-byte entries, then strings; string offsets
    count from the header."""
    strings = b""
    offsets = []
    base = 48 + 24 * len(entries)
    for _flags, key, value, _hwcap in entries:
        key_at = base + len(strings)
        strings += key.encode() + b"\0"
        value_at = base + len(strings)
        strings += value.encode() + b"\0"
        offsets.append((key_at, value_at))
    out = b"glibc-ld.so.cache1.1" + struct.pack("<II", len(entries), len(strings)) + bytes(20)
    for (flags, _, _, hwcap), (key_at, value_at) in zip(entries, offsets, strict=True):
        out += struct.pack("<iIIIQ", flags, key_at, value_at, 0, hwcap)
    return out + strings


def old_cache(entries: list[tuple[int, str, str]], then: bytes = b"") -> bytes:
    """ld.so-1.7.0: 12-byte entries whose string offsets count from the string table; the new
    format may follow, 8-byte aligned."""
    strings = b""
    packed = b""
    for flags, key, value in entries:
        key_at = len(strings)
        strings += key.encode() + b"\0"
        value_at = len(strings)
        strings += value.encode() + b"\0"
        packed += struct.pack("<iII", flags, key_at, value_at)
    out = b"ld.so-1.7.0\0" + struct.pack("<I", len(entries)) + packed
    if then:
        out += bytes(-len(out) % 8) + then
    else:
        out += strings
    return out


def test_reads_every_cache_format() -> None:
    entries = [(X86_64, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0)]
    expected = [CacheEntry("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", X86_64)]
    assert read_ld_so_cache(new_cache(entries)) == expected
    assert read_ld_so_cache(old_cache([e[:3] for e in entries])) == expected
    combined = old_cache([(X86_64, "libold.so.1", "/lib/libold.so.1")], then=new_cache(entries))
    assert read_ld_so_cache(combined) == expected  # the new format is the authority


def test_a_broken_cache_is_empty() -> None:
    whole = new_cache([(X86_64, "libc.so.6", "/lib/libc.so.6", 0)])
    assert read_ld_so_cache(b"") == []
    assert read_ld_so_cache(b"not a cache at all") == []
    assert read_ld_so_cache(whole[:60]) == []
    assert read_ld_so_cache(whole[:-3]) == []  # an unterminated string


def test_the_real_cache_finds_libc() -> None:
    if not Path("/etc/ld.so.cache").exists():
        pytest.skip("no /etc/ld.so.cache here")
    entries = read_ld_so_cache(Path("/etc/ld.so.cache").read_bytes())
    assert any(e.key.startswith("libc.so") for e in entries)
    found = resolve_library("libc")
    assert found is not None and Path(found).name.startswith("libc.so")


# --- resolving library names under a root ----------------------------------------------------

ELF = b"\x7fELF" + bytes(60)


def make_root(tmp_path: Path, files: dict[str, bytes], cache: bytes | None = None) -> Path:
    root = tmp_path / "root"
    for name, data in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if cache is not None:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "ld.so.cache").write_bytes(cache)
    return root


def test_the_cache_is_asked_first(tmp_path: Path) -> None:
    cache = new_cache(
        [
            (I386, "libssl.so.3", "/usr/lib/i386-linux-gnu/libssl.so.3", 0),
            (
                X86_64,
                "libssl.so.3",
                "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libssl.so.3",
                4,
            ),
            (X86_64, "libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3", 0),
            (X86_64, "libssl.so.1.1", "/usr/lib/x86_64-linux-gnu/libssl.so.1.1", 0),
            (X86_64, "libssl.so", "/usr/lib/x86_64-linux-gnu/libssl.so", 0),
            (X86_64, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0),
            (X86_64, "libgone.so.1", "/lib/x86_64-linux-gnu/libgone.so.1", 0),
        ]
    )
    files = {
        "/usr/lib/i386-linux-gnu/libssl.so.3": ELF,
        "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libssl.so.3": ELF,
        "/usr/lib/x86_64-linux-gnu/libssl.so.3": ELF,
        "/usr/lib/x86_64-linux-gnu/libssl.so.1.1": ELF,
        "/usr/lib/x86_64-linux-gnu/libssl.so": ELF,
        "/lib/x86_64-linux-gnu/libc.so.6": ELF,
    }
    root = make_root(tmp_path, files, cache)
    # Native ABI, no hwcaps subdirectory, cache order (ldconfig's preference) first.
    assert resolve_library("libssl", root, "x86_64") == "/usr/lib/x86_64-linux-gnu/libssl.so.3"
    assert (
        resolve_library("libssl.so.1.1", root, "x86_64")
        == "/usr/lib/x86_64-linux-gnu/libssl.so.1.1"
    )
    assert resolve_library("libssl.so", root, "x86_64") == "/usr/lib/x86_64-linux-gnu/libssl.so"
    assert resolve_library("libc", root, "x86_64") == "/lib/x86_64-linux-gnu/libc.so.6"
    assert resolve_library("libc.so.6", root, "x86_64") == "/lib/x86_64-linux-gnu/libc.so.6"
    assert resolve_library("libgone", root, "x86_64") is None  # in the cache, not on disk
    assert resolve_library("libcrypto", root, "x86_64") is None
    # An unknown machine takes any ABI, in cache order.
    assert resolve_library("libssl", root, "sparc64") == "/usr/lib/i386-linux-gnu/libssl.so.3"


def test_without_a_cache_the_library_directories_are_searched(tmp_path: Path) -> None:
    files = {
        "/etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n# comment\n/opt/first\n",
        "/etc/ld.so.conf.d/app.conf": b"/opt/app/lib  # the app\nhwcap 0 nosegneg\n",
        "/opt/app/lib/libz.so": b"/* GNU ld script */ INPUT(libz.so.1)\n",
        "/opt/app/lib/libz.so.1.2.13": ELF,
        "/opt/app/lib/libz.so.1.2.9": ELF,
        "/usr/lib/x86_64-linux-gnu/libc.so": b"/* GNU ld script */\n",
        "/usr/lib/x86_64-linux-gnu/libc.so.6": ELF,
        "/usr/lib/libonly.so.2": ELF,
    }
    root = make_root(tmp_path, files)
    assert library_dirs(root, "x86_64") == [
        "/opt/app/lib",
        "/opt/first",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    assert resolve_library("libz", root, "x86_64") == "/opt/app/lib/libz.so.1.2.13"
    assert resolve_library("libc", root, "x86_64") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert resolve_library("libc.so", root, "x86_64") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert resolve_library("libonly", root, "x86_64") == "/usr/lib/libonly.so.2"
    assert resolve_library("libnone", root, "x86_64") is None


def test_library_dirs_of_other_machines(tmp_path: Path) -> None:
    assert library_dirs(tmp_path, "aarch64")[:2] == [
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ]
    assert library_dirs(tmp_path, "armv7l") == [
        "/lib/arm-linux-gnueabihf",
        "/usr/lib/arm-linux-gnueabihf",
        "/lib",
        "/usr/lib",
    ]


def test_an_absolute_name_is_checked_under_the_root(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"/opt/bin/app": ELF})
    assert resolve_library("/opt/bin/app", root) == "/opt/bin/app"
    assert resolve_library("/opt/bin/nope", root) is None


def test_inside_a_process_mount_namespace() -> None:
    # Our own process: /proc/PID/root is readable without privileges.
    assert Host().resolve_library("libc", os.getpid()) == resolve_library("libc")


def test_a_process_that_does_not_exist() -> None:
    with pytest.raises(HostError, match="process 4194304 does not exist"):
        Host().resolve_library("libc", 4194304)


def test_xdp_modes_come_from_the_host_config(tmp_path):
    from reconciler.hostfacts import Host

    cfg = tmp_path / "config.yaml"
    cfg.write_text("interfaces:\n  eth0: {xdpmode: generic}\n  eth1: {}\n")
    host = Host(labels_file=None, config_file=cfg)
    assert (host.xdp_mode("eth0"), host.xdp_mode("eth1"), host.xdp_mode("eth9")) == (
        "generic",
        None,
        None,
    )
    assert Host(labels_file=None, config_file=tmp_path / "missing.yaml").xdp_mode("eth0") is None
    cfg.write_text("interfaces:\n  eth0: {xdpmode: turbo}\n")
    with pytest.raises(
        HostError,
        match=r"config.yaml:2: interfaces.eth0.xdpmode: must be one of: auto, native, generic "
        r"\(got 'turbo'\)",
    ):
        Host(labels_file=None, config_file=cfg).xdp_mode("eth0")
