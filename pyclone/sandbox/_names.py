"""Kernel names a sandbox description is checked against: namespaces, capabilities, rlimits."""

from __future__ import annotations

import resource

#: What ``new="all"`` and the default give: bwrap's --unshare-all plus a mount namespace.
DEFAULT_NEW = frozenset({"user", "pid", "mnt", "net", "uts", "ipc", "cgroup"})

#: Capability names (without ``CAP_``), in kernel order (include/uapi/linux/capability.h).
CAPABILITIES = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)

#: rlimit names (lower case, without ``RLIMIT_``) and their :mod:`resource` numbers.
RLIMITS = {
    name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}
