#!/usr/bin/python3
"""Runs a command inside the parts of a systemd unit's sandbox that can be had without systemd as PID 1, read from the
unit file itself: User=/Group= (a name, or the fallback given), NoNewPrivileges=, MemoryDenyWriteExecute= (the
kernel's PR_SET_MDWE, the same rule: no mapping both writable and executable, none made executable later),
CapabilityBoundingSet= (empty: every capability dropped from the bounding set) and SystemCallFilter= with
SystemCallErrorNumber= (a seccomp filter built with libseccomp from `systemd-analyze syscall-filter`'s groups, as
systemd builds it). So a test shows the daemon works inside the sandbox the package ships, not only that the unit
file scores well.

Usage: unit-sandbox.py UNIT-FILE [--user NAME] -- COMMAND [ARGS...]
"""
import ctypes
import errno
import os
import pwd
import subprocess
import sys

import seccomp

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
PR_CAPBSET_DROP = 24
libc = ctypes.CDLL(None, use_errno=True)


def unit_settings(path):
    """[Service] assignments in order; an empty assignment resets a list, as in systemd."""
    settings, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                settings.append((key.strip(), value.strip()))
    return settings


def expand(name, seen=None):
    """The system calls of a name: a group (@...) expanded through systemd-analyze, recursively, or the call itself."""
    if not name.startswith("@"):
        return {name}
    seen = seen or set()
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        calls |= expand(word, seen)
    return calls


def syscall_filter(settings):
    """(allowed calls or None, errno): systemd's semantics for SystemCallFilter= lines: the first line decides whether
    it is an allow list (no ~) or a deny list (~); later lines add to or take from it."""
    allowed, denied, error = None, set(), errno.EPERM
    for key, value in settings:
        if key == "SystemCallErrorNumber":
            error = getattr(errno, value)
        if key != "SystemCallFilter":
            continue
        invert = value.startswith("~")
        names = value.lstrip("~").split()
        calls = set().union(*(expand(n) for n in names)) if names else set()
        if allowed is None and not denied:
            if invert:
                denied = calls
            else:
                allowed = calls
        elif allowed is not None:
            allowed = allowed - calls if invert else allowed | calls
        else:
            denied = denied | calls if invert else denied - calls
    return allowed, denied, error


def main():
    args = sys.argv[1:]
    if "--" not in args or len(args) < 3:
        sys.exit(__doc__)
    split = args.index("--")
    unit, options, command = args[0], args[1:split], args[split + 1:]
    fallback = options[options.index("--user") + 1] if "--user" in options else "nobody"
    settings = unit_settings(unit)
    value = {k: v for k, v in settings}

    user = value.get("User", fallback)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = pwd.getpwnam(fallback)
    allowed, denied, error = syscall_filter(settings)

    if value.get("CapabilityBoundingSet", None) == "":
        for cap in range(0, 64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
                sys.exit(f"unit-sandbox: PR_CAPBSET_DROP {cap}: {os.strerror(ctypes.get_errno())}")
    if value.get("NoNewPrivileges") == "yes" or allowed is not None or denied:
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if value.get("MemoryDenyWriteExecute") == "yes" and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"unit-sandbox: PR_SET_MDWE: {os.strerror(ctypes.get_errno())} (the kernel needs 6.3 or later)")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)

    if allowed is not None or denied:
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW if allowed is None else seccomp.ERRNO(error))
        for call in sorted(allowed or denied):
            try:
                f.add_rule(seccomp.ERRNO(error) if allowed is None else seccomp.ALLOW, call)
            except (RuntimeError, ValueError, OSError):
                pass   # a name this architecture has no call for (systemd skips those too)
        # What exec needs until the new image runs, which systemd's filter allows through its own baseline.
        for call in ("execve", "exit_group", "rt_sigreturn"):
            try:
                f.add_rule(seccomp.ALLOW, call)
            except (RuntimeError, ValueError, OSError):
                pass
        f.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
