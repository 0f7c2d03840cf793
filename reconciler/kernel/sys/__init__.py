"""Raw kernel interfaces: bpf(2), libbpf through ctypes, BTF, bpffs/tracefs and mounts, network
namespaces and rtnetlink. Nothing here knows about attach points, pin layouts or dispatchers."""
