"""A program's settings, as a legacy manifest or a v0.5.x application member writes them, turned
into the current application's type, member key and ``links``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kinds import tc as tc_kind
from reconciler.kinds import xdp as xdp_kind

FieldPath = tuple[str | int, ...]

# Legacy return-code spellings -> the applications' (the kind registry's tables, reversed).
XDP_PROCEED_ON = {legacy: app for app, legacy in xdp_kind.PROCEED_ON.items()}
TC_PROCEED_ON = {legacy: app for app, legacy in tc_kind.PROCEED_ON.items()}


class ConvertError(Exception):
    """Input with no current equivalent: ``path`` is the field (in the document as read) to fix."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# --- a program's settings -> (current type, member key, member) --------------------------------

Member = tuple[str, str, dict[str, Any]]


class _Fields:
    """A mapping's fields taken one by one; any left over has no current equivalent."""

    def __init__(self, data: dict[str, Any], at: FieldPath, what: str) -> None:
        self.data, self.at, self.what, self.taken = data, at, what, set[str]()

    def take(self, name: str) -> Any:
        self.taken.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def done(self) -> None:
        for key in self.data:
            if key not in self.taken:
                raise ConvertError((*self.at, key), no_equivalent(key, self.what))


def _network(
    settings: dict[str, Any],
    at: FieldPath,
    what: str,
    *,
    proceed: dict[str, str] | None = None,
    direction: bool = True,
    xdpmode: bool = False,
) -> dict[str, Any]:
    f = _Fields(settings, at, what)
    if not f.has("interfaceselector"):
        raise ConvertError(at, f"{what} needs interfaceselector")
    link: dict[str, Any] = {
        "interfaceSelector": _selector(f.take("interfaceselector"), (*at, "interfaceselector"))
    }
    if f.has("netns"):
        link["netnsPath"] = f.take("netns")
    if xdpmode and f.has("xdpmode"):
        link["xdpMode"] = f.take("xdpmode")
    if direction and f.has("direction"):
        link["direction"] = _direction(f.take("direction"), (*at, "direction"))
    if f.has("priority"):
        link["priority"] = f.take("priority")
    if proceed is not None and f.has("proceedon"):
        link["proceedOn"] = _proceed_on(f.take("proceedon"), proceed, (*at, "proceedon"))
    f.done()
    return link


def _xdp(settings: dict[str, Any], at: FieldPath) -> Member:
    link = _network(
        settings, at, "an XDP program", proceed=XDP_PROCEED_ON, direction=False, xdpmode=True
    )
    return "XDP", "xdp", {"links": [link]}


def _tc(settings: dict[str, Any], at: FieldPath) -> Member:
    return "TC", "tc", {"links": [_network(settings, at, "a TC program", proceed=TC_PROCEED_ON)]}


def _tcx(settings: dict[str, Any], at: FieldPath) -> Member:
    return "TCX", "tcx", {"links": [_network(settings, at, "a TCX program")]}


def _tracepoint(settings: dict[str, Any], at: FieldPath) -> Member:
    f = _Fields(settings, at, "a tracepoint program")
    names = f.take("names")
    if not isinstance(names, list):
        raise ConvertError((*at, "names"), "names must be a list of tracepoints (group/name)")
    f.done()
    return "TracePoint", "tracepoint", {"links": [{"name": n} for n in names]}


def _kprobe(settings: dict[str, Any], at: FieldPath, ret: bool = False) -> Member:
    f = _Fields(settings, at, "a kprobe program")
    ret = bool(f.take("retprobe")) or ret
    link: dict[str, Any] = {"function": f.take("func_name")}
    offset = f.take("offset")
    if ret:
        if offset:  # a return probe fires at the function's return: an offset means nothing
            raise ConvertError((*at, "offset"), "a kretprobe has no offset; remove it")
    elif offset is not None:
        link["offset"] = offset
    f.done()
    if link["function"] is None:
        raise ConvertError(at, "func_name is missing: name the kernel function")
    return (
        ("KRetProbe", "kretprobe", {"links": [link]})
        if ret
        else ("KProbe", "kprobe", {"links": [link]})
    )


def _kretprobe(settings: dict[str, Any], at: FieldPath) -> Member:
    return _kprobe(settings, at, ret=True)


def _uprobe(settings: dict[str, Any], at: FieldPath, ret: bool = False) -> Member:
    f = _Fields(settings, at, "a uprobe program")
    ret = bool(f.take("retprobe")) or ret
    link: dict[str, Any] = {}
    for old, new in (("target", "target"), ("func_name", "function"), ("offset", "offset")):
        if f.has(old):
            link[new] = f.take(old)
    if f.has("pid"):
        link["pid"] = f.take("pid")
    if f.has("containers"):
        link["containers"] = _containers(f.take("containers"), (*at, "containers"))
    f.done()
    member = "uretprobe" if ret else "uprobe"
    return ("URetProbe" if ret else "UProbe"), member, {"links": [link]}


def _uretprobe(settings: dict[str, Any], at: FieldPath) -> Member:
    return _uprobe(settings, at, ret=True)


def _ftrace(app_type: str, member: str) -> Callable[[dict[str, Any], FieldPath], Member]:
    def convert(settings: dict[str, Any], at: FieldPath) -> Member:
        f = _Fields(settings, at, f"an {member} program")
        function = f.take("func_name")
        f.done()
        if function is None:
            raise ConvertError(at, "func_name is missing: name the kernel function")
        # A legacy fentry/fexit manifest is attached when loaded: {mode: Attach} says so now.
        return app_type, member, {"function": function, "links": [{"mode": "Attach"}]}

    return convert


def _cgroup_skb(settings: dict[str, Any], at: FieldPath) -> Member:
    f = _Fields(settings, at, "a cgroup_skb program")
    link = {
        "cgroup": f.take("cgroup"),
        "direction": _direction(f.take("direction"), (*at, "direction")),
    }
    f.done()
    return "CgroupSkb", "cgroupSkb", {"links": [link]}


def _cgroup_sock_addr(settings: dict[str, Any], at: FieldPath) -> Member:
    f = _Fields(settings, at, "a cgroup sock_addr program")
    link = {"cgroup": f.take("cgroup"), "attachType": f.take("attachtype")}
    f.done()
    return "CgroupSockAddr", "cgroupSockAddr", {"links": [link]}


MEMBERS: dict[str, Callable[[dict[str, Any], FieldPath], Member]] = {
    "xdp": _xdp,
    "tc": _tc,
    "tcx": _tcx,
    "tracepoint": _tracepoint,
    "kprobe": _kprobe,
    "kretprobe": _kretprobe,
    "uprobe": _uprobe,
    "uretprobe": _uretprobe,
    "fentry": _ftrace("FEntry", "fentry"),
    "fexit": _ftrace("FExit", "fexit"),
    "cgroupskb": _cgroup_skb,
    "cgroupsockaddr": _cgroup_sock_addr,
}


# --- pieces --------------------------------------------------------------------------------


def _selector(value: Any, at: FieldPath) -> dict[str, Any]:
    selector = mapping(value, at)
    out: dict[str, Any] = {}
    for key, item in selector.items():
        if key == "interfaces":
            out["interfaces"] = item
        elif key == "primarynodeinterface":
            out["primaryNodeInterface"] = item
        else:
            raise ConvertError((*at, key), no_equivalent(key, "an interfaceselector"))
    return out


def _direction(value: Any, at: FieldPath) -> str:
    if value not in ("ingress", "egress"):
        raise ConvertError(at, f"direction must be ingress or egress (got {value!r})")
    return str(value).capitalize()


def _proceed_on(value: Any, table: dict[str, str], at: FieldPath) -> list[str]:
    if not isinstance(value, list):
        raise ConvertError(at, "proceedon must be a list of return codes")
    out = []
    for i, code in enumerate(value):
        if code not in table:
            raise ConvertError(
                (*at, i), f"{code!r} is not a return code: one of {', '.join(table)}"
            )
        out.append(table[code])
    return out


def _containers(value: Any, at: FieldPath) -> dict[str, Any]:
    names = {"namespace": "namespace", "pods": "pods", "containernames": "containerNames"}
    out: dict[str, Any] = {}
    for key, item in mapping(value, at).items():
        if key in names:
            out[names[key]] = item
        elif key == "pid":
            out["pid"] = item
        else:
            raise ConvertError((*at, key), no_equivalent(key, "containers"))
    return out


def bytecode(value: Any, at: FieldPath) -> dict[str, Any]:
    code = mapping(value, at)
    out: dict[str, Any] = {}
    for key, item in code.items():
        if key == "path":
            out["path"] = item
        elif key == "image":
            out["image"] = _image(item, (*at, "image"))
        else:
            raise ConvertError((*at, key), no_equivalent(key, "bytecode"))
    return out


def _image(value: Any, at: FieldPath) -> dict[str, Any]:
    names = {"imagepullpolicy": "imagePullPolicy", "imagepullsecret": "imagePullSecret"}
    out: dict[str, Any] = {}
    for key, item in mapping(value, at).items():
        if key in ("url", *names.values()):
            out[key] = item
        elif key in names:
            out[names[key]] = item
        else:
            raise ConvertError((*at, key), no_equivalent(key, "bytecode.image"))
    return out


def mapping(value: Any, at: FieldPath) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConvertError(at, "must be a mapping")
    return value


def no_equivalent(key: str, what: str) -> str:
    return (
        f"{key!r} of {what} has no equivalent in the current format; "
        "remove it or rewrite it by hand"
    )
