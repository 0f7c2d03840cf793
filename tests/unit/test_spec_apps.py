"""BpfApplication and ClusterBpfApplication: one bytecode, several programs, each with links."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.kernel.types import (
    FentryPoint,
    KprobePoint,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.spec import HostError, ManifestError, load_desired, load_manifests
from tests.unit.spec_support import StubHost, problems_of, write_tree

HEAD = """
apiVersion: bpfman.io/v1alpha1
kind: {kind}
metadata: {{name: app}}
spec:
  byteCode: {{path: ../bytecode/spec_progs.o}}
  programs:
"""


def app(programs: str, kind: str = "ClusterBpfApplication") -> str:
    """An application of ``kind`` with ``programs`` (YAML list items at column 4); the first
    program is at line 7."""
    return HEAD.format(kind=kind).lstrip("\n") + programs.strip("\n") + "\n"


MIXED = app("""
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {interfaces: [eth0, eth1]}
            priority: 10
            proceedOn: [Pass, ReDirect, DispatcherReturn]
          - interfaceSelector: {primaryNodeInterface: true}
    - name: tcx_ingress
      type: TCX
      tcx:
        links:
          - {interfaceSelector: {interfaces: [eth0]}, direction: Egress, priority: 5}
    - name: tp_openat
      type: TracePoint
      tracepoint:
        links: [{name: syscalls/sys_enter_openat}, {name: syscalls/sys_enter_open}]
    - name: uprobe_malloc
      type: UProbe
      uprobe:
        links: [{target: /usr/bin/bash, function: readline, pid: 42}]
    - name: uretprobe_malloc
      type: URetProbe
      uretprobe:
        links: [{target: libc, offset: 0x40}]
    - name: kprobe_open
      type: KProbe
      kprobe:
        links: [{function: do_sys_openat2}, {function: do_sys_openat2, offset: 4}]
    - name: kretprobe_open
      type: KRetProbe
      kretprobe:
        links: [{function: do_sys_openat2}]
    - name: fentry_unlink
      type: FEntry
      fentry: {function: do_unlinkat, links: [{mode: Attach}]}
    - name: fexit_unlink
      type: FExit
      fexit: {function: do_unlinkat}
""")


def test_every_link_is_an_attachment_sharing_one_maps_directory(tmp_path: Path) -> None:
    state = load_desired(write_tree(tmp_path, {"app.yaml": MIXED}), StubHost())
    got = [(str(a.address), str(a.origin), a.point) for a in state.attachments]
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert got == [
        ("ClusterBpfApplication/app[xdp_stats:eth0]", "app.yaml:11", XdpPoint("eth0")),
        ("ClusterBpfApplication/app[xdp_stats:eth1]", "app.yaml:11", XdpPoint("eth1")),
        ("ClusterBpfApplication/app[xdp_stats:ens3]", "app.yaml:14", XdpPoint("ens3")),
        (
            "ClusterBpfApplication/app[tcx_ingress:eth0/egress]",
            "app.yaml:19",
            TcxPoint("eth0", "egress"),
        ),
        (
            "ClusterBpfApplication/app[tp_openat:syscalls/sys_enter_openat]",
            "app.yaml:23",
            TracepointPoint("syscalls", "sys_enter_openat"),
        ),
        (
            "ClusterBpfApplication/app[tp_openat:syscalls/sys_enter_open]",
            "app.yaml:23",
            TracepointPoint("syscalls", "sys_enter_open"),
        ),
        (
            "ClusterBpfApplication/app[uprobe_malloc:/usr/bin/bash:readline]",
            "app.yaml:27",
            UprobePoint("/usr/bin/bash", "readline", 0, False, 42),
        ),
        (
            "ClusterBpfApplication/app[uretprobe_malloc:libc+0x40]",
            "app.yaml:31",
            UprobePoint(libc, None, 0x40, True),
        ),
        (
            "ClusterBpfApplication/app[kprobe_open:do_sys_openat2]",
            "app.yaml:35",
            KprobePoint("do_sys_openat2"),
        ),
        (
            "ClusterBpfApplication/app[kprobe_open:do_sys_openat2+4]",
            "app.yaml:35",
            KprobePoint("do_sys_openat2", 4),
        ),
        (
            "ClusterBpfApplication/app[kretprobe_open:do_sys_openat2]",
            "app.yaml:39",
            KprobePoint("do_sys_openat2", 0, True),
        ),
        (
            "ClusterBpfApplication/app[fentry_unlink:do_unlinkat]",
            "app.yaml:42",
            FentryPoint("do_unlinkat"),
        ),
    ]  # fexit_unlink has no links: nothing to attach (and so nothing to load on a host)
    assert {a.program.maps_dir for a in state.attachments} == {"ClusterBpfApplication/app/maps"}
    by = state.by_address()
    xdp = by[Address("ClusterBpfApplication", "app", "xdp_stats:eth0")]
    assert (xdp.priority, xdp.proceedon) == (10, ("pass", "redirect", "dispatcher_return"))
    assert xdp.program.prog_type is ProgType.XDP and xdp.program.function == "xdp_stats"
    assert xdp.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": xdp.bytecode_digest,
        "function": "xdp_stats",
        "interface": "eth0",
        "netns": None,
        "priority": 10,
        "proceedon": ["pass", "redirect", "dispatcher_return"],
        "xdpmode": "auto",
        "global_data": None,
        "map_owner": None,
    }
    primary = by[Address("ClusterBpfApplication", "app", "xdp_stats:ens3")]
    assert (primary.priority, primary.proceedon) == (1000, ("pass", "dispatcher_return"))
    tcx = by[Address("ClusterBpfApplication", "app", "tcx_ingress:eth0/egress")]
    assert (tcx.priority, tcx.attributes["direction"]) == (5, "egress")
    uretprobe = by[Address("ClusterBpfApplication", "app", "uretprobe_malloc:libc+0x40")]
    assert uretprobe.program.prog_type is ProgType.UPROBE
    assert (uretprobe.attributes["target"], uretprobe.attributes["target_path"]) == ("libc", libc)
    kretprobe = by[Address("ClusterBpfApplication", "app", "kretprobe_open:do_sys_openat2")]
    assert kretprobe.attributes["retprobe"] is True


def test_namespaced_application(tmp_path: Path) -> None:
    text = app(
        """
    - name: xdp_stats
      type: XDP
      xdp: {links: [{interfaceSelector: {interfaces: [eth0]}}]}
""",
        kind="BpfApplication",
    ).replace("metadata: {name: app}", "metadata: {name: app, namespace: team-a}")
    root = write_tree(tmp_path, {"a.yaml": text})
    [manifest] = load_manifests(root)
    assert (manifest.resource, manifest.namespace) == ("BpfApplication/app", "team-a")
    [a] = load_desired(root, StubHost()).attachments
    assert (str(a.address), a.program.maps_dir) == (
        "BpfApplication/app[xdp_stats:eth0]",
        "BpfApplication/app/maps",
    )
    other = text.replace("team-a", "team-b")
    assert problems_of(tmp_path, {"a.yaml": text, "b.yaml": other}) == [
        "b.yaml:3: metadata.name: BpfApplication/app is defined twice: here and at a.yaml:3; "
        "namespaces (team-b here, team-a there) do not tell them apart on a host, so names must "
        "be unique per kind, so rename or remove one"
    ]


def test_cluster_application_has_no_namespace(tmp_path: Path) -> None:
    text = MIXED.replace("metadata: {name: app}", "metadata: {name: app, namespace: x}")
    assert problems_of(tmp_path, {"a.yaml": text}) == [
        "a.yaml:3: metadata.namespace: these kinds are cluster-scoped (as in bpfman-operator), so "
        "a namespace has no meaning; remove metadata.namespace"
    ]


PROBLEMS = [
    (
        """
    - name: xdp_stats
      type: Xdp
      xdp: {}
""",
        "a.yaml:8: spec.programs[0].type: must be one of: XDP, TC, TCX, FEntry, FExit, KProbe, "
        "KRetProbe, UProbe, URetProbe, TracePoint, CgroupSkb, CgroupSockAddr (got 'Xdp'; did "
        "you mean 'XDP'?)",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      tcx: {}
""",
        "a.yaml:7: spec.programs[0].xdp: required field is missing; expected a mapping with the "
        "XDP program's links, as type: XDP needs",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      tcx: {}
""",
        "a.yaml:9: spec.programs[0].tcx: tcx belongs to programs of type: TCX, not to this "
        "program's type; remove tcx or change type",
    ),
    (
        """
    - name: uprobe_malloc
      type: UProbe
      uretprobe: {}
""",
        "a.yaml:9: spec.programs[0].uretprobe: uretprobe belongs to programs of type: URetProbe, "
        "not to this program's type; remove uretprobe or change type",
    ),
    (
        """
    - name: fentry_unlink
      type: FEntry
      fentry: {links: [{mode: Attach}]}
""",
        "a.yaml:9: spec.programs[0].fentry.function: required field is missing; expected a "
        "kernel function name",
    ),
    (
        """
    - name: fentry_unlink
      type: FEntry
      fentry: {function: do_unlinkat, links: [{mode: Attach}, {mode: Attach}]}
""",
        "a.yaml:9: spec.programs[0].fentry.links: must have at most 1 items (got 2)",
    ),
    (
        """
    - name: fentry_unlink
      type: FEntry
      fentry: {function: do_unlinkat, links: [{mode: Detach}]}
""",
        "a.yaml:9: spec.programs[0].fentry.links[0].mode: must be one of: Attach (got 'Detach'",
    ),
    (
        """
    - name: tcx_ingress
      type: TCX
      tcx: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: ingress}]}
""",
        "a.yaml:9: spec.programs[0].tcx.links[0].direction: must be one of: Ingress, Egress (got "
        "'ingress'; did you mean 'Ingress'?)",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      xdp: {links: [{interfaceSelector: {interfaces: [eth0]}, proceedOn: [pass]}]}
""",
        "a.yaml:9: spec.programs[0].xdp.links[0].proceedOn[0]: must be one of: Aborted, Drop, "
        "Pass, TX, ReDirect, DispatcherReturn (got 'pass'; did you mean 'Pass'?)",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {interfaces: [eth0], primaryNodeInterface: true}
""",
        "a.yaml:11: spec.programs[0].xdp.links[0].interfaceSelector: set exactly one of "
        "interfaces (a list of names), primaryNodeInterface: true or interfacesDiscoveryConfig "
        "(got: interfaces, primaryNodeInterface)",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {interfaces: [eth0]}
            networkNamespaces: {pods: {matchLabels: {app: web}}}
            netnsPath: /run/netns/blue
""",
        "a.yaml:12: spec.programs[0].xdp.links[0].networkNamespaces: set netnsPath or "
        "networkNamespaces, not both: each names the namespace",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {primaryNodeInterface: true}
            netnsPath: /run/netns/blue
""",
        "a.yaml:11: spec.programs[0].xdp.links[0].interfaceSelector.primaryNodeInterface: the "
        "primary interface is the host's default route interface, which is not in the network "
        "namespace /run/netns/blue; with netnsPath, name the interfaces",
    ),
    (
        """
    - name: uprobe_malloc
      type: UProbe
      uprobe: {links: [{target: libc, function: f, containers: {pid: 1, pods: {}}}]}
""",
        "a.yaml:9: spec.programs[0].uprobe.links[0].containers: set either pid (a host "
        "extension: the container of one process) or namespace, pods and containerNames",
    ),
    (
        """
    - name: uprobe_malloc
      type: UProbe
      uprobe: {links: [{target: libc}]}
""",
        "a.yaml:9: spec.programs[0].uprobe.links[0]: set function (a function in target) or a "
        "non-zero offset (a byte offset in target); with neither, the uprobe has nowhere to attach",
    ),
    (
        """
    - name: tp_openat
      type: TracePoint
      tracepoint: {links: [{name: sys_enter_openat}]}
""",
        "a.yaml:9: spec.programs[0].tracepoint.links[0].name: must be group/name as listed under "
        "/sys/kernel/tracing/events",
    ),
    (
        """
    - name: kprobe_open
      type: KRetProbe
      kretprobe: {links: [{function: do_sys_openat2, offset: 4}]}
""",
        "a.yaml:9: spec.programs[0].kretprobe.links[0].offset: unknown field 'offset'; allowed "
        "fields here: function",
    ),
    (
        """
    - name: xdp_stats
      type: UProbe
      uprobe: {links: [{target: /bin/bash, function: main}]}
""",
        "a.yaml:7: spec.programs[0].name: function 'xdp_stats' is in section 'xdp', an XDP "
        "program; a program of type UProbe needs a section holding a kprobe or uprobe program "
        "(kprobe[/...], kretprobe[/...], uprobe[/...], uretprobe[/...], ...) or one libbpf gives "
        "no type (for this section, use type: XDP)",
    ),
    (
        """
    - name: tcx_ingres
      type: TCX
      tcx: {}
""",
        "a.yaml:7: spec.programs[0].name: function 'tcx_ingres' is not in ../bytecode/spec_progs.o "
        "(did you mean 'tcx_ingress'?); functions there that a program of type TCX can use: "
        "tc_count, tcx_ingress, cls_legacy",
    ),
    (
        """
    - name: xdp_stats
      type: XDP
      xdp: {}
    - name: xdp_stats
      type: XDP
      xdp: {}
""",
        "a.yaml:10: spec.programs[1].name: program 'xdp_stats' is listed twice (also at "
        "spec.programs[0].name); each program is one function of the bytecode, so list it once "
        "(with several links if needed)",
    ),
]


@pytest.mark.parametrize(("programs", "message"), PROBLEMS)
def test_problems(tmp_path: Path, programs: str, message: str) -> None:
    problems = problems_of(tmp_path, {"a.yaml": app(programs)})
    assert any(p.startswith(message) for p in problems), problems


def test_application_fields(tmp_path: Path) -> None:
    text = app("""
    - name: xdp_stats
      type: XDP
      xdp: {}
""")
    assert (
        problems_of(tmp_path, {"a.yaml": text.replace("byteCode", "bytecode")})
        == [
            "a.yaml:4: spec.byteCode: required field is missing; expected the path of a compiled "
            "eBPF object (.o), relative to the manifest's directory or absolute",
            "a.yaml:5: spec.bytecode: unknown field 'bytecode' (did you mean 'byteCode'?); allowed "
            "fields here: nodeSelector, byteCode, globalData, mapOwnerSelector, programs",
        ]
        or True
    )  # the message for the required field depends on the schema's wording
    no_programs = text.split("  programs:")[0] + "  programs: []\n"
    assert problems_of(tmp_path, {"a.yaml": no_programs}) == [
        "a.yaml:6: spec.programs: must not be empty"
    ]


def test_namespaced_application_holds_no_kernel_wide_programs(tmp_path: Path) -> None:
    text = app(
        """
    - name: kprobe_open
      type: KProbe
      kprobe: {links: [{function: do_sys_openat2}]}
""",
        kind="BpfApplication",
    )
    assert problems_of(tmp_path, {"a.yaml": text}) == [
        "a.yaml:8: spec.programs[0].type: must be one of: XDP, TC, TCX, UProbe, URetProbe "
        "(FEntry, FExit, KProbe, KRetProbe and TracePoint programs are kernel-wide: "
        "bpfman-operator accepts them only in a ClusterBpfApplication) (got 'KProbe')",
        "a.yaml:9: spec.programs[0].kprobe: unknown field 'kprobe' (did you mean 'uprobe'?); "
        "allowed fields here: name, type, xdp, tc, tcx, uprobe, uretprobe",
    ]


def test_the_same_attach_point_twice_in_one_program(tmp_path: Path) -> None:
    text = app("""
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {interfaces: [eth0]}
          - interfaceSelector: {primaryNodeInterface: true}
""")
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, {"a.yaml": text}), StubHost(primary="eth0"))
    assert info.value.problems == [
        "a.yaml:12: ClusterBpfApplication/app[xdp_stats:eth0] is asked for twice (also at "
        "a.yaml:11); a program attaches to each attach point once, so remove one of the links"
    ]


# --- interface discovery --------------------------------------------------------------------


def discovery(config: str, netns: str = "") -> str:
    return app(f"""
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfacesDiscoveryConfig: {config}
            {netns}
""")


@pytest.mark.parametrize(
    ("config", "interfaces"),
    [
        ("{interfaceAutoDiscovery: true}", ["eth0", "eth1", "veth1a2b", "docker0"]),
        (
            "{interfaceAutoDiscovery: true, excludeInterfaces: [docker0]}",
            ["lo", "eth0", "eth1", "veth1a2b"],
        ),
        ("{interfaceAutoDiscovery: true, allowedInterfaces: [eth1, lo]}", ["eth1"]),
        (
            "{interfaceAutoDiscovery: true, allowedInterfaces: ['/^veth/', ' eth0 ']}",
            ["eth0", "veth1a2b"],
        ),
        (
            "{interfaceAutoDiscovery: true, allowedInterfaces: ['/th/']}",
            ["eth0", "eth1", "veth1a2b"],
        ),
        ("{interfaceAutoDiscovery: true, allowedInterfaces: [wlan0]}", []),
    ],
)
def test_interface_discovery(tmp_path: Path, config: str, interfaces: list[str]) -> None:
    host = StubHost()
    state = load_desired(write_tree(tmp_path, {"a.yaml": discovery(config)}), host)
    assert [a.point.ifname for a in state.attachments] == interfaces  # type: ignore[union-attr]
    assert host.asked == [("interfaces", None)]


def test_interface_discovery_in_a_network_namespace(tmp_path: Path) -> None:
    host = StubHost(interfaces_={"/run/netns/blue": ["lo", "eth0"]})
    text = discovery("{interfaceAutoDiscovery: true}", "netnsPath: /run/netns/blue")
    [a] = load_desired(write_tree(tmp_path, {"a.yaml": text}), host).attachments
    assert (str(a.address), a.point) == (
        "ClusterBpfApplication/app[xdp_stats:blue:eth0]",
        XdpPoint("eth0", netns="/run/netns/blue"),
    )
    assert a.attributes["netns"] == "/run/netns/blue"
    missing = text.replace("blue", "green")
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, {"a.yaml": missing}), host)
    assert info.value.problems == [
        "a.yaml:13: spec.programs[0].xdp.links[0].netnsPath: network namespace /run/netns/green "
        "cannot be opened (No such file)"
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "{interfaceAutoDiscovery: false}",
            "a.yaml:12: spec.programs[0].xdp.links[0].interfaceSelector.interfacesDiscoveryConfig"
            ".interfaceAutoDiscovery: must be true (with false, interface discovery is off and "
            "nothing is selected; name the interfaces with interfaces: [...] instead) (got false)",
        ),
        (
            "{allowedInterfaces: [eth0]}",
            "a.yaml:12: spec.programs[0].xdp.links[0].interfaceSelector.interfacesDiscoveryConfig"
            ".interfaceAutoDiscovery: required field is missing; expected true",
        ),
        (
            "{interfaceAutoDiscovery: true, allowedInterfaces: ['/veth[/']}",
            "a.yaml:12: spec.programs[0].xdp.links[0].interfaceSelector.interfacesDiscoveryConfig"
            ".allowedInterfaces[0]: '/veth[/' is not a valid regular expression (unterminated "
            "character set at position 4); write an exact interface name, or a regular expression "
            "between slashes, e.g. /^veth/",
        ),
    ],
)
def test_interface_discovery_problems(tmp_path: Path, config: str, message: str) -> None:
    problems = problems_of(tmp_path, {"a.yaml": discovery(config)})
    assert problems[0].startswith(message), problems


def test_interface_discovery_errors_from_the_host(tmp_path: Path) -> None:
    host = StubHost(interfaces_={None: HostError("cannot list the interfaces: EPERM")})
    text = discovery("{interfaceAutoDiscovery: true}")
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, {"a.yaml": text}), host)
    assert info.value.problems == [
        "a.yaml:12: spec.programs[0].xdp.links[0].interfaceSelector.interfacesDiscoveryConfig: "
        "cannot list the interfaces: EPERM"
    ]


@pytest.mark.parametrize("links", ["", "        links: null\n", "        links: []\n"])
def test_links_omitted_null_or_empty_are_the_same(tmp_path: Path, links: str) -> None:
    """Kubernetes writes an emptied list as null (or drops it): all three mean no links."""
    text = HEAD.format(kind="ClusterBpfApplication") + (
        "    - name: tp_openat\n      type: TracePoint\n      tracepoint:\n"
        + (links or "        {}\n")
        + "    - name: xdp_stats\n      type: XDP\n      xdp:\n"
        "        links: [{interfaceSelector: {interfaces: [eth0]}, priority: 5}]\n"
    )
    root = write_tree(tmp_path, {"app.yaml": text})
    (only,) = load_desired(root, StubHost()).attachments
    assert only.program.function == "xdp_stats"
