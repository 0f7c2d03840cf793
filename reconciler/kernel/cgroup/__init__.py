"""cgroup attach points: BPF_LINK_CREATE on a cgroup v2 directory."""
