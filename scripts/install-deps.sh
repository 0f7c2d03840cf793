#!/usr/bin/env bash
# Installs what bpfman and its tests need on a fresh Debian machine: system packages (only those
# missing), a .venv with the package in editable mode, and the bpffs/tracefs mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang || need_pkgs+=(clang)
have llvm-strip || need_pkgs+=(llvm)
have bpftool || need_pkgs+=(bpftool)
have xdp-loader || need_pkgs+=(xdp-tools)
have ip || need_pkgs+=(iproute2)
have tc || need_pkgs+=(iproute2)
have nsenter || need_pkgs+=(util-linux)
have git || need_pkgs+=(git)
# The watcher's git tests serve a repository over ssh with a real sshd (key auth, loopback).
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
have make || need_pkgs+=(make)
have dot || need_pkgs+=(graphviz)  # renders `bpfman graph` (tests, make docs-graph)
have gcc || need_pkgs+=(gcc)
# The VM tier (scripts/vm/vm.py, which downloads the kernel itself): qemu under TCG, a static
# busybox for the initramfs, kmod for depmod on the host and modprobe in the guest.
have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
    need_pkgs+=(busybox-static)
have depmod || need_pkgs+=(kmod)
# The image tests run their own registries (tests/images/registry.py: free loopback ports, temp
# storage) and write their bcrypt htpasswd files with htpasswd -B.
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)
have htpasswd || need_pkgs+=(apache2-utils)
# Interop: images built by a second tool (umoci) and pushed by skopeo, in OCI and Docker v2 form.
have skopeo || need_pkgs+=(skopeo)
have umoci || need_pkgs+=(umoci)
# Container selectors (tests/containers) run a private podman and its API service; runc because
# crun refuses hosts whose cgroups are hybrid (v1 controllers beside a v2 mount).
have podman || need_pkgs+=(podman)
have runc || need_pkgs+=(runc)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
ldconfig -p 2>/dev/null | grep -q 'libbpf.so.1 ' || need_pkgs+=(libbpf1)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "install-deps: installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    other_pkgs=()
    for pkg in "${need_pkgs[@]}"; do
        [ "$pkg" = docker-registry ] || other_pkgs+=("$pkg")
    done
    if [ ${#other_pkgs[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${other_pkgs[@]}" >/dev/null
    fi
    if [ ${#other_pkgs[@]} -lt ${#need_pkgs[@]} ]; then
        # docker-registry's postinst starts a system-wide registry on :5000 (all interfaces) and
        # enables it at boot; nothing here uses it. Install it alone with service starts denied,
        # as CI containers' policy-rc.d does, then make sure it is neither running nor enabled.
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
        if [ -n "$own_policy" ]; then
            rm -f /usr/sbin/policy-rc.d
            trap - EXIT
        fi
        # Stops only the pid in the service's pidfile, never the tests' own registries.
        /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
        update-rc.d docker-registry disable >/dev/null 2>&1 || true
        if have deb-systemd-helper; then
            deb-systemd-helper disable docker-registry.service >/dev/null 2>&1 || true
        fi
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.bpfman-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    if ! .venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        exit 1
    fi
    .venv/bin/python -m compileall -q .venv/lib >/dev/null 2>&1 || true
    touch "$stamp"
fi
# Precompile: an editable install writes no .pyc, and hosts that set PYTHONDONTWRITEBYTECODE would
# otherwise compile every module, and every dataclass's methods, on every run of bpfman.
.venv/bin/python -m reconciler.precompile >/dev/null

# bpffs and tracefs may be unmounted on a fresh host; bpfman mounts bpffs itself, but the tests'
# independent tools (bpftool, libbpf tracepoint attach) need both.
if [ "$(id -u)" = 0 ]; then
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true
fi
