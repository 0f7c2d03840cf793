"""The ``bpfman`` command: argument parsing, prompts, output and exit codes (as Terraform's).

Exit codes: 0 success; 1 error; 2 (plan --detailed-exitcode only) success with changes present.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from reconciler import __version__, terminal
from reconciler.errors import UserError, error_document
from reconciler.terminal import print_json

log = logging.getLogger("bpfman")

DEFAULT_BPFFS_ROOT = "/sys/fs/bpf/bpfman"
DEFAULT_STATE_DIR = "/run/bpfman"


__all__ = ["UserError", "build_parser", "main"]


def _add_globals(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--bpffs-root",
        default=d if suppress else os.environ.get("BPFMAN_BPFFS_ROOT", DEFAULT_BPFFS_ROOT),
        help="bpffs directory holding everything bpfman manages (env BPFMAN_BPFFS_ROOT; "
        f"default {DEFAULT_BPFFS_ROOT})",
    )
    p.add_argument(
        "--state-dir",
        default=d if suppress else os.environ.get("BPFMAN_STATE_DIR", DEFAULT_STATE_DIR),
        help="directory of the state file and lock (env BPFMAN_STATE_DIR; "
        f"default {DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--label",
        action="append",
        default=d if suppress else [],
        metavar="KEY=VALUE",
        help="a label of this host for nodeselector (repeatable; wins over the labels file)",
    )
    p.add_argument(
        "--labels-file",
        default=d if suppress else os.environ.get("BPFMAN_LABELS_FILE"),
        metavar="PATH",
        help="YAML mapping of this host's labels (env BPFMAN_LABELS_FILE; "
        "default /etc/bpfman/labels.yaml)",
    )
    p.add_argument(
        "--config",
        default=d if suppress else os.environ.get("BPFMAN_CONFIG"),
        metavar="PATH",
        help="host config, e.g. per-interface XDP modes (env BPFMAN_CONFIG; "
        "default /etc/bpfman/config.yaml)",
    )
    p.add_argument(
        "--no-color", action="store_true", default=d if suppress else False, help="plain output"
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=d if suppress else 0,
        help="log more to stderr (repeat for debug; env BPFMAN_LOG=debug|info|warning)",
    )


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        nargs="?",
        default=".",
        help="directory of manifests, one manifest file (.yaml/.yml), or a git URL (file://, "
        "https://, http://, ssh://, git://, user@host:path) (default: .); for apply also a plan "
        "file saved by `bpfman plan --out`",
    )
    p.add_argument("--ref", help="git branch, tag or commit to read (git sources)")
    p.add_argument(
        "--path", help="subdirectory (or one manifest file) of the source holding the manifests"
    )
    p.add_argument(
        "--git-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long each git command of a git source may take before it is stopped "
        "(default: 300)",
    )


def _add_targeting(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="only this address, or KIND/NAME for all of a manifest's (repeatable)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="everything but this address or KIND/NAME (repeatable)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error under ``--json`` also prints the error document on
    stdout (exit code 2 as always), so that stdout is JSON whatever went wrong."""

    json_wanted = False  # set by main() from its argv

    def error(self, message: str) -> NoReturn:
        if self.json_wanted:
            print_json(error_document(UserError(f"{self.prog}: {message}")))
        super().error(message)


class Terminated(BaseException):
    """SIGTERM outside an apply's steps: unwinds like Ctrl-C, so that every ``finally`` runs (a
    git clone is removed, the lock released); during the steps, apply/interrupt.py decides."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bpfman",
        description="Declarative manager for eBPF programs: plan and apply YAML manifests.",
    )
    parser.add_argument("--version", action="version", version=f"bpfman {__version__}")
    _add_globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _add_globals(p, suppress=True)
        return p

    p = cmd("validate", "check manifests without touching or asking the host (CI-friendly)")
    _add_source(p)
    p.add_argument("--json", action="store_true", help="machine-readable result")

    p = cmd("plan", "show what apply would change")
    _add_source(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument(
        "--json", action="store_true", help="print the plan as a versioned JSON document"
    )
    form.add_argument(
        "--markdown",
        action="store_true",
        help="print the plan as Markdown for a pull-request comment (counts, one collapsible "
        "section per change, drift, errors, programs it detaches)",
    )
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    p.add_argument(
        "--show-unselected",
        action="store_true",
        help="also list the manifests whose nodeselector does not match this host, and why",
    )
    p.add_argument("--out", metavar="FILE", help="save the plan for `bpfman apply FILE`")
    p.add_argument(
        "--refresh-only",
        action="store_true",
        help="show only what changed outside bpfman; plan no kernel change",
    )
    _add_targeting(p)

    p = cmd("show", "render a plan saved by `bpfman plan --out` (as `plan` prints it)")
    p.add_argument("planfile", metavar="PLANFILE", help="a file written by `bpfman plan --out`")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="as `bpfman plan --json`")
    form.add_argument("--markdown", action="store_true", help="as `bpfman plan --markdown`")

    p = cmd("graph", "draw the order apply would follow, as Graphviz DOT or Mermaid")
    _add_source(p)
    p.add_argument(
        "--format",
        choices=("dot", "mermaid"),
        default="dot",
        help="dot (render with `dot -Tsvg`) or mermaid (default dot)",
    )
    _add_targeting(p)

    for name, help_ in (
        ("apply", "make the kernel match the manifests"),
        ("destroy", "unload everything bpfman manages under the bpffs root"),
    ):
        p = cmd(name, help_)
        _add_targeting(p)
        if name == "apply":
            _add_source(p)
            p.add_argument(
                "--refresh-only",
                action="store_true",
                help="record what changed outside bpfman in the state file; change no program",
            )
        p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
        p.add_argument("--json", action="store_true", help="machine-readable result")
        p.add_argument(
            "--lock-timeout",
            type=_seconds,
            default=10.0,
            metavar="SECONDS",
            help="how long to wait for another apply to finish (default 10)",
        )

    p = cmd("watch", "keep this host converged with SOURCE, reconciling on every change")
    _add_source(p)
    p.add_argument(
        "--interval",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="full reconcile and drift check every SECONDS, with ±10%% jitter (default 60)",
    )
    p.add_argument(
        "--retry-interval",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="first retry after a failed reconcile; doubled on each failure up to --interval "
        "(default 5)",
    )
    p.add_argument(
        "--drift",
        choices=("repair", "report"),
        default="repair",
        help="what to do about changes made outside bpfman (default repair)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="apply a revision that would unload every managed program",
    )
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="serve Prometheus metrics, /healthz and /readyz on ADDR (PORT or HOST:PORT; "
        "loopback unless a host is given); default off",
    )
    p.add_argument(
        "--webhook-listen",
        metavar="ADDR",
        help="receive push webhooks (GitHub X-Hub-Signature-256 or GitLab X-Gitlab-Token) on "
        "ADDR (PORT or HOST:PORT; loopback unless a host is given): each triggers a reconcile",
    )
    p.add_argument(
        "--webhook-secret-file",
        metavar="PATH",
        help="the webhook secret (required with --webhook-listen)",
    )
    p.add_argument(
        "--ssh-key-file",
        metavar="PATH",
        help="private key for an ssh:// or user@host: git source",
    )
    p.add_argument(
        "--git-credentials-file",
        metavar="PATH",
        help="USER:PASSWORD or a token, for an https:// git source (never logged)",
    )
    p = cmd("status", "show what `bpfman watch` last did, and whether it runs")
    p.add_argument("--json", action="store_true", help="machine-readable status")
    p = cmd("reconcile", "ask the running `bpfman watch` to reconcile now, and wait for it")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for the result (default 300)",
    )

    p = cmd("suspend", "stop `bpfman watch` applying changes (it keeps planning)")
    p.add_argument("--reason", default="", help="shown by the watcher's log and status")
    cmd("resume", "let `bpfman watch` apply changes again")

    p = cmd("list", "list what bpfman manages on this host")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--by-hook",
        action="store_true",
        help="every XDP, TC and TCX hook (and event link) with its programs in run order and "
        "who put each there, ours or not",
    )
    p = cmd("get", "show one managed attachment: our state and the kernel's view")
    p.add_argument("address", help="e.g. XdpProgram/xdp-counter[eth0]")
    p.add_argument("--json", action="store_true")
    _add_image(cmd)
    p = cmd(
        "convert",
        "rewrite manifests into the current form (bpfman-operator v0.5.x applications, "
        "kubectl exports) and show the diff",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories")
    p.add_argument(
        "--to",
        choices=("application",),
        help="application: also turn each legacy per-kind manifest (XdpProgram, ...) into a "
        "ClusterBpfApplication of the same name",
    )
    p.add_argument(
        "--write", action="store_true", help="rewrite the files in place (default: only show)"
    )
    return parser


def _add_image(cmd: Any) -> None:
    """``bpfman image pull|inspect|build`` (reconciler/imagecmd.py)."""
    p = cmd("image", "pull, inspect and build bytecode images")
    sub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)
    for name, help_, default in (
        ("pull", "download an image into the cache, every part checked", "Always"),
        ("inspect", "show an image's digests, platforms, labels, programs and maps", None),
    ):
        q = sub.add_parser(name, help=help_, description=help_)
        q.add_argument("ref", metavar="REF", help="e.g. quay.io/bpfman-bytecode/xdp-pass:latest")
        q.add_argument(
            "--pull-policy",
            default=default,
            metavar="POLICY",
            help=f"Always, IfNotPresent or Never (default {default or 'IfNotPresent'})",
        )
        q.add_argument("--json", action="store_true", help="machine-readable result")
    q = sub.add_parser(
        "build",
        help="build a bpfman bytecode image from ELF objects (labels derived from them)",
        description="build a bpfman bytecode image from ELF objects (labels derived from them)",
    )
    q.add_argument("--bytecode", metavar="FILE", help="the object, for this host's platform")
    q.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH=FILE",
        help="an object for another platform (repeatable; makes a multi-platform index)",
    )
    q.add_argument("--tag", required=True, metavar="REF", help="e.g. registry:5000/prog:v1")
    q.add_argument("--push", action="store_true", help="push it to the tag's registry")
    q = sub.add_parser(
        "sign",
        help="sign the digest REF resolves to with a private key (cosign's key-pair format)",
        description="sign the digest REF resolves to with a private key (cosign's key-pair "
        "format) and push the signature next to the image",
    )
    q.add_argument("ref", metavar="REF")
    q.add_argument("--key", required=True, metavar="FILE", help="PEM private key (PKCS#8)")
    q.add_argument("--password-file", metavar="FILE", help="the key's password, if encrypted")
    q = sub.add_parser(
        "verify",
        help="check REF's signature: by --key files, a keyless identity, or the host config's "
        "signing: section",
        description="check REF's signature: by --key files, a keyless identity "
        "(--certificate-oidc-issuer with --certificate-identity or --certificate-identity-regexp, "
        "against --trusted-root), or else the host config's signing: keys and identities",
    )
    q.add_argument("ref", metavar="REF")
    q.add_argument(
        "--key", action="append", default=[], metavar="FILE", help="PEM public key (repeatable)"
    )
    q.add_argument("--certificate-identity", metavar="SUBJECT", help="the exact signer")
    q.add_argument(
        "--certificate-identity-regexp",
        metavar="REGEXP",
        help="a regular expression the whole signer must match",
    )
    q.add_argument("--certificate-oidc-issuer", metavar="URL", help="the signer's OIDC issuer")
    q.add_argument(
        "--trusted-root",
        metavar="FILE",
        help="Sigstore trusted_root.json (default: signing.trusted_root, else public-good)",
    )
    q.add_argument("--pull-policy", default=None, metavar="POLICY")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser(
        "prune",
        help="remove cached images that no state record (nor a manifest of SOURCE) names",
        description="remove cached images that no state record (nor a manifest of SOURCE) "
        "names: their manifests, configs, layers, objects, signatures and tags",
    )
    q.add_argument("source", nargs="?", metavar="SOURCE", help="a manifest directory to keep")
    q.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    q.add_argument("--json", action="store_true")


LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(verbose: int) -> None:
    """``-v`` (info) and ``-vv`` (debug) win over BPFMAN_LOG; a BPFMAN_LOG that names no level
    is an error rather than a silent default."""
    env = os.environ.get("BPFMAN_LOG", "").strip()
    if env and env.lower() not in LOG_LEVELS:
        raise UserError(
            f"BPFMAN_LOG={env!r} is not a log level; set it to one of {', '.join(LOG_LEVELS)}, "
            "or unset it (default: warning)"
        )
    level = getattr(logging, env.upper()) if env else logging.WARNING
    if verbose:
        level = logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Lazy, for start-up time: the sources package loads GitPython (~100 ms); --help does not
    # get here, every command does.
    from reconciler.sources.redact import RedactingFilter

    for handler in logging.getLogger().handlers:  # no log line shows a URL's credentials
        handler.addFilter(RedactingFilter())


def _use_color(args: argparse.Namespace) -> bool:
    return sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ


def _stderr_color(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not args.no_color and "NO_COLOR" not in os.environ


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # Everything printed from here on, logs included, goes through the escaping streams.
    out, err = terminal.install(sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = out, err
    _Parser.json_wanted = "--json" in (sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    out.colors = _use_color(args)
    err.colors = _stderr_color(args)
    # Lazy, for start-up time: commands pulls in the engine, jsonschema and libbpf (~100 ms)
    # and the kernel's types (~15 ms) that --help, --version and argument errors do without.
    from reconciler import commands
    from reconciler.kernel.types import KernelError

    try:
        _setup_logging(args.verbose)
        if args.command == "convert":
            # Lazy like commands: convert needs the manifest reader, not the engine.
            from reconciler import convert

            code = convert.run(args.paths, args.to == "application", args.write)
        else:
            code = commands.run(args, color=_use_color(args))
    except UserError as e:
        _error(e, args)
        code = 1
    except KernelError as e:
        _error(UserError(str(e)), args)
        code = 1
    except PermissionError as e:
        message = (
            f"permission denied: {e.filename or e}; bpfman loads eBPF programs and must run as "
            "root (or with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_ADMIN)"
        )
        _error(UserError(message), args)
        code = 1
    except KeyboardInterrupt:
        _error(UserError("interrupted"), args)
        code = 130
    except Terminated:
        _error(UserError("terminated (SIGTERM)"), args)
        code = 143
    sys.exit(code)


def _error(error: UserError, args: argparse.Namespace) -> None:
    """One ``Error:`` message on stderr; with --json, also the error document on stdout, so that
    stdout stays JSON whatever went wrong."""
    if getattr(args, "json", False) and not error.json_printed:
        extra: dict[str, Any] = {}
        if args.command == "validate":
            extra = {"valid": False, "problems": error.problems}
        print_json(error_document(error, **extra))
    elif getattr(args, "markdown", False) and not error.json_printed:
        # Lazy like commands: stdout stays one Markdown document (for a CI step to post),
        # saying why there is no plan.
        from reconciler.plan.markdown import render_error

        sys.stdout.write(render_error(str(error), args.command))
    prefix = terminal.paint("Error:", "31;1") + " " if _stderr_color(args) else "Error: "
    print(prefix + str(error), file=sys.stderr)


def _seconds(text: str) -> float:
    """A duration flag: a finite number of seconds, 0 or more (``nan`` or ``inf`` would make a
    wait endless)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 to 86400, e.g. 30 or 2.5"
        )
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value
