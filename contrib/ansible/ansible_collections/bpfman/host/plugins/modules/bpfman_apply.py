#!/usr/bin/python
"""Ansible module: plan and apply bpfman manifests on the managed host."""

DOCUMENTATION = r"""
---
module: bpfman_apply
short_description: Plan and apply bpfman eBPF manifests on a host
description:
  - Runs C(bpfman plan) against a manifest source (a directory on the managed host or a git URL)
    and, unless in check mode, C(bpfman apply) of exactly the plan that was made (a plan file saved
    with C(bpfman plan --out)), so what is applied is what was shown.
  - Reports C(changed) only when the plan had changes; a second run against the same manifests
    reports C(changed=false).
  - In check mode only C(bpfman plan) runs, and nothing on the host changes.
  - With C(--diff), the plan as bpfman prints it is shown.
  - When bpfman refuses (an invalid manifest, a host problem, a verifier rejection, a stale plan),
    the task fails with bpfman's own message, naming the C(file:line) or address.
  - With O(state=absent), runs C(bpfman destroy), unloading everything bpfman manages under the
    bpffs root.
version_added: "0.1.0"
author: bpfman contributors
options:
  state:
    description:
      - V(present) makes the kernel match the manifests; V(absent) unloads everything bpfman manages
        under O(bpffs_root) (C(bpfman destroy)).
    type: str
    choices: [present, absent]
    default: present
  source:
    description:
      - The manifests, as C(bpfman plan SOURCE) takes them - a directory or a single manifest file
        on the managed host, or a git URL (C(https://...), C(ssh://...), C(git@host:path),
        C(file:///...)).
      - Required when O(state=present).
    type: str
  path:
    description:
      - Subdirectory (or one manifest file) of the source holding the manifests (C(--path)).
    type: str
  ref:
    description: Git branch, tag or commit to read, for a git source (C(--ref)).
    type: str
  git_timeout:
    description: Seconds each git command of a git source may take (C(--git-timeout)).
    type: int
  labels:
    description:
      - Labels of this host for C(nodeSelector), each given as C(--label KEY=VALUE); they win over
        the labels file. Booleans are written V(true)/V(false).
    type: dict
  labels_file:
    description:
      - The labels file to read (C(--labels-file)); bpfman's default is C(/etc/bpfman/labels.yaml).
    type: path
  config:
    description:
      - The host config file (C(--config)); bpfman's default is C(/etc/bpfman/config.yaml).
    type: path
  bpffs_root:
    description:
      - The bpffs directory holding everything bpfman manages (C(--bpffs-root)); bpfman's default
        is C(/sys/fs/bpf/bpfman).
    type: path
  state_dir:
    description:
      - The directory of bpfman's state file and lock (C(--state-dir)); bpfman's default is
        C(/run/bpfman).
    type: path
  target:
    description: Only these addresses (or C(KIND/NAME)) are planned and applied (C(--target)).
    type: list
    elements: str
  exclude:
    description: Everything but these addresses (or C(KIND/NAME)) (C(--exclude)).
    type: list
    elements: str
  lock_timeout:
    description: Seconds to wait for another apply or destroy holding the state lock.
    type: float
  bpfman:
    description:
      - The bpfman executable. By default C(bpfman) is looked up on E(PATH), then in
        C(/opt/bpfman/bin) and C(/usr/local/bin).
    type: path
notes:
  - Needs root on the managed host (bpfman loads eBPF programs), so use C(become) there.
  - A plan that needs nothing loaded, unloaded or repaired is C(changed=false); drift that the plan
    repairs is a change.
seealso:
  - name: bpfman CLI reference
    description: The commands, options, exit codes and JSON documents this module relies on.
    link: https://github.com/bpfman/bpfman
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Converge the eBPF programs with the manifests shipped to the host
  bpfman.host.bpfman_apply:
    source: /etc/bpfman/manifests
  become: true

- name: Apply a subdirectory of a config repository at a tag, with an extra label
  bpfman.host.bpfman_apply:
    source: https://git.example.com/ops/ebpf.git
    ref: v1.4.0
    path: manifests/prod
    labels:
      role: web

- name: Unload everything bpfman manages
  bpfman.host.bpfman_apply:
    state: absent
"""

RETURN = r"""
plan:
  description:
    - The plan, as C(bpfman plan --json) prints it (C(resource_changes), C(summary),
      C(has_changes), C(errors), C(diagnostics), ...).
    - For O(state=absent), the destroy plan (C(null) in check mode).
    - When bpfman failed before it had a plan, its error document (C(error), C(diagnostics)).
  returned: when bpfman printed it
  type: dict
apply:
  description:
    - The result of C(bpfman apply --json) (C(applied), C(outcomes) with kernel program and link
      ids, C(result) with the numbers added, changed and destroyed). Absent in check mode and when
      there was nothing to do.
  returned: when something was applied or destroyed
  type: dict
attachments:
  description:
    - For O(state=absent), what bpfman managed before (C(bpfman list --json)'s attachments).
  returned: when O(state=absent)
  type: list
  elements: dict
msg:
  description: On failure, bpfman's own message (its stderr), naming the C(file:line) or address.
  returned: always
  type: str
  sample: |-
    Error: a manifest is invalid (1 problem); nothing was changed:
      manifests/tp.yaml:7: spec.priorty: unknown field 'priorty'; allowed fields here: ...
diagnostics:
  description:
    - On failure, bpfman's diagnostics (C(severity), C(message), C(file), C(line), C(field),
      C(address)).
  returned: on failure, when bpfman gave them
  type: list
  elements: dict
cmd:
  description: The last bpfman command run.
  returned: always
  type: list
  elements: str
rc:
  description:
    - The exit code of the bpfman command that failed (on success there is none, as
      C(plan --detailed-exitcode) exits 2 for a plan with changes).
  returned: on failure
  type: int
stderr:
  description: The standard error of the last bpfman command run.
  returned: always
  type: str
"""

# Ansible's module layout: the documentation strings come first, then the imports.
import json  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

_SEARCH_DIRS = ["/opt/bpfman/bin", "/usr/local/bin", "/usr/bin"]


def _label_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class Bpfman:
    """Runs the bpfman executable with the module's global options and keeps the last run."""

    def __init__(self, module):
        self.module = module
        p = module.params
        exe = p["bpfman"]
        if exe:
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                module.fail_json(msg=f"the bpfman executable {exe} is not an executable file")
        else:
            exe = module.get_bin_path("bpfman", required=True, opt_dirs=_SEARCH_DIRS)
        self.base = [exe, "--no-color"]
        for opt, name in (
            ("--bpffs-root", "bpffs_root"),
            ("--state-dir", "state_dir"),
            ("--labels-file", "labels_file"),
            ("--config", "config"),
        ):
            if p[name]:
                self.base += [opt, p[name]]
        for key in sorted(p["labels"] or {}):
            self.base += ["--label", f"{key}={_label_value(p['labels'][key])}"]
        self.last = {"cmd": [], "rc": None, "stderr": ""}

    def run(self, *args):
        cmd = self.base + list(args)
        # Arguments are passed as they are: no ~ or $VAR expansion (a git URL may hold a '$').
        rc, out, err = self.module.run_command(cmd, expand_user_and_vars=False, errors="replace")
        self.last = {"cmd": cmd, "rc": rc, "stderr": err}
        return rc, out, err

    def run_json(self, *args):
        rc, out, err = self.run(*args)
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        return rc, doc, err

    def done(self):
        """What a successful result says of the last run (no rc: Ansible fails a result whose rc
        is not 0, and plan --detailed-exitcode exits 2 for a plan with changes)."""
        return {"cmd": self.last["cmd"], "stderr": self.last["stderr"]}

    def fail(self, doc=None, **extra):
        """Fails the task with bpfman's own message: its stderr, else the JSON document's error."""
        err = (self.last["stderr"] or "").strip()
        msg = err
        if not msg and isinstance(doc, dict):
            msg = doc.get("error") or ""
        if not msg:
            msg = f"bpfman exited {self.last['rc']} without a message"
        result = dict(self.last, msg=msg, changed=False, **extra)
        if isinstance(doc, dict):
            result["plan"] = doc
            if doc.get("diagnostics"):
                result["diagnostics"] = doc["diagnostics"]
        self.module.fail_json(**result)


def _narrowing(params):
    args = []
    for addr in params["target"] or []:
        args += ["--target", addr]
    for addr in params["exclude"] or []:
        args += ["--exclude", addr]
    return args


def _source_args(params):
    args = [params["source"]]
    if params["path"]:
        args += ["--path", params["path"]]
    if params["ref"]:
        args += ["--ref", params["ref"]]
    if params["git_timeout"] is not None:
        args += ["--git-timeout", str(params["git_timeout"])]
    return args


def _lock_args(params):
    if params["lock_timeout"] is None:
        return []
    return ["--lock-timeout", repr(float(params["lock_timeout"]))]


def present(module, bpfman):
    p = module.params
    source = _source_args(p) + _narrowing(p)
    plan_file = os.path.join(module.tmpdir, "bpfman.plan")
    out = [] if module.check_mode else ["--out", plan_file]
    rc, plan, _ = bpfman.run_json("plan", *source, "--json", "--detailed-exitcode", *out)
    # 0: no changes, 2: changes (--detailed-exitcode). An argparse usage error also exits 2, but
    # prints no JSON plan, so a 2 without a plan document is a failure too.
    if rc not in (0, 2) or not isinstance(plan, dict) or "resource_changes" not in plan:
        bpfman.fail(plan)
    changed = rc == 2
    result = {"changed": changed, "plan": plan}
    if changed and module._diff:
        # The same plan rendered for people (plan is read-only: the saved plan stays current).
        trc, text, _ = bpfman.run("plan", *source)
        if trc == 0:
            result["diff"] = {"prepared": text.rstrip("\n")}
    if changed and not module.check_mode:
        arc, applied, _ = bpfman.run_json("apply", plan_file, "--json", *_lock_args(p))
        if arc != 0:
            bpfman.fail(applied, plan_made=plan)
        result["apply"] = applied
    module.exit_json(**result, **bpfman.done())


def absent(module, bpfman):
    p = module.params
    rc, listing, _ = bpfman.run_json("list", "--json")
    if rc != 0 or not isinstance(listing, dict):
        bpfman.fail(listing)
    attachments = listing.get("attachments") or []
    # Which attachments a narrowed destroy picks is bpfman's to say, so only an unnarrowed
    # destroy is predicted from the listing.
    narrowed = p["target"] or p["exclude"]
    wanted = None if narrowed else [a["address"] for a in attachments]
    result = {"changed": bool(attachments), "attachments": attachments, "plan": None}
    if module.check_mode or not attachments:
        if wanted is not None:
            result["changed"] = bool(wanted)
            if wanted and module._diff:
                lines = [f"  - {a} will be unloaded (bpfman destroy)" for a in wanted]
                result["diff"] = {"prepared": "\n".join(lines)}
        module.exit_json(**result, **bpfman.done())
    drc, doc, _ = bpfman.run_json(
        "destroy", "--auto-approve", "--json", *_narrowing(p), *_lock_args(p)
    )
    if drc != 0 or not isinstance(doc, dict):
        bpfman.fail(doc)
    summary = doc.get("result") or doc.get("summary") or {}
    result["changed"] = bool(summary.get("destroyed", summary.get("destroy", 0)))
    result["plan"] = doc
    result["apply"] = doc
    if result["changed"] and module._diff:
        lines = [
            f"  - {c['address']} will be unloaded (bpfman destroy)"
            for c in doc.get("resource_changes", [])
            if "delete" in c.get("change", {}).get("actions", [])
        ]
        result["diff"] = {"prepared": "\n".join(lines)}
    module.exit_json(**result, **bpfman.done())


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "source": {"type": "str"},
            "path": {"type": "str"},
            "ref": {"type": "str"},
            "git_timeout": {"type": "int"},
            "labels": {"type": "dict"},
            "labels_file": {"type": "path"},
            "config": {"type": "path"},
            "bpffs_root": {"type": "path"},
            "state_dir": {"type": "path"},
            "target": {"type": "list", "elements": "str"},
            "exclude": {"type": "list", "elements": "str"},
            "lock_timeout": {"type": "float"},
            "bpfman": {"type": "path"},
        },
        required_if=[("state", "present", ["source"])],
        supports_check_mode=True,
    )
    bpfman = Bpfman(module)
    if module.params["state"] == "present":
        present(module, bpfman)
    else:
        absent(module, bpfman)


if __name__ == "__main__":
    main()
