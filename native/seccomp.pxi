# Building a seccomp filter with libseccomp, in the parent. The child only
# loads the finished BPF program (prctl), which is async-signal-safe.

from libc.stdint cimport uint32_t, uint64_t

cdef extern from "<seccomp.h>" nogil:
    ctypedef void *scmp_filter_ctx
    cdef enum scmp_compare:
        SCMP_CMP_EQ
        SCMP_CMP_MASKED_EQ
    struct scmp_arg_cmp:
        unsigned int arg
        scmp_compare op
        uint64_t datum_a
        uint64_t datum_b
    uint32_t SCMP_ACT_ALLOW
    uint32_t SCMP_ACT_KILL_PROCESS
    uint32_t SCMP_ACT_ERRNO(uint32_t)
    cdef enum scmp_filter_attr:
        SCMP_FLTATR_ACT_BADARCH
    int seccomp_attr_set(scmp_filter_ctx ctx, scmp_filter_attr attr, uint32_t value)
    int __NR_SCMP_ERROR
    scmp_filter_ctx seccomp_init(uint32_t def_action)
    void seccomp_release(scmp_filter_ctx ctx)
    int seccomp_syscall_resolve_name(const char *name)
    int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                               unsigned int arg_cnt, const scmp_arg_cmp *arg_array)
    int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd)


def seccomp_program(deny, deny_ioctl_requests=(), deny_personality_flags=(),
                    deny_clone_flags=(), unshare_user_namespace_with=None,
                    mount_only_with=None):
    """A BPF program that kills the process (SIGSYS) on a denied system call.

    Args:
        deny: system call names to deny outright.
        deny_ioctl_requests: ioctl request numbers to deny (e.g. TIOCSTI).
        deny_personality_flags: personality(2) flag bits whose setting is
            denied; the query personality(0xffffffff) stays allowed.
        deny_clone_flags: clone(2) flag bits (new namespaces) that are
            denied; clone3, whose flags the filter cannot read, then fails
            with ENOSYS so that libc falls back to clone.
        unshare_user_namespace_with: with ``unshare`` not denied, the
            namespace flags it may take besides CLONE_NEWUSER (any other
            flag kills).
        mount_only_with: with ``mount`` not denied, the only mount flags it
            may take.
    Returns:
        (program bytes, names libseccomp does not know on this architecture).
    """
    cdef scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW)
    cdef scmp_arg_cmp cmp
    cdef int nr, rc
    if ctx == NULL:
        raise OSError("seccomp_init failed")
    unknown = []
    try:
        # A system call of another architecture (int 0x80 on x86-64) kills
        # the whole process, not just the calling thread.
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)
        if rc < 0:
            raise OSError(-rc, "seccomp bad-architecture action")
        for name in deny:
            nr = seccomp_syscall_resolve_name(name.encode())
            if nr == __NR_SCMP_ERROR:
                unknown.append(name)
                continue
            rc = seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, nr, 0, NULL)
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for {name}")
        nr = seccomp_syscall_resolve_name(b"ioctl")
        for request in deny_ioctl_requests:
            cmp.arg = 1
            cmp.op = SCMP_CMP_MASKED_EQ
            cmp.datum_a = 0xFFFFFFFF  # the request is an int: ignore the upper half
            cmp.datum_b = request
            rc = seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, nr, 1, &cmp)
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for ioctl {request:#x}")
        nr = seccomp_syscall_resolve_name(b"personality")
        for flag in deny_personality_flags:
            # Bit 31 clear: the 0xffffffff query never matches.
            cmp.arg = 0
            cmp.op = SCMP_CMP_MASKED_EQ
            cmp.datum_a = flag | 0x80000000
            cmp.datum_b = flag
            rc = seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, nr, 1, &cmp)
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for personality flag {flag:#x}")
        if deny_clone_flags:
            nr = seccomp_syscall_resolve_name(b"clone")
            for flag in deny_clone_flags:
                cmp.arg = 0
                cmp.op = SCMP_CMP_MASKED_EQ
                cmp.datum_a = flag
                cmp.datum_b = flag
                rc = seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, nr, 1, &cmp)
                if rc < 0:
                    raise OSError(-rc, f"seccomp rule for clone flag {flag:#x}")
            nr = seccomp_syscall_resolve_name(b"clone3")
            if nr != __NR_SCMP_ERROR:
                rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(38), nr, 0, NULL)  # ENOSYS
                if rc < 0:
                    raise OSError(-rc, "seccomp rule for clone3")
        if unshare_user_namespace_with is not None:
            # A user namespace and these: without CLONE_NEWUSER, unshare
            # works only inside a user namespace the caller made itself.
            _deny_flags_outside(ctx, b"unshare", 0, CLONE_NEWUSER | unshare_user_namespace_with)
        if mount_only_with is not None:
            _deny_flags_outside(ctx, b"mount", 3, mount_only_with)
        fd = _os.memfd_create("seccomp", 1)  # MFD_CLOEXEC
        try:
            rc = seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(-rc, "seccomp_export_bpf")
            program = _os.pread(fd, _os.fstat(fd).st_size, 0)
        finally:
            _os.close(fd)
    finally:
        seccomp_release(ctx)
    return program, unknown



cdef _deny_flags_outside(scmp_filter_ctx ctx, bytes name, unsigned int arg,
                         unsigned long allowed):
    """Kills ``name`` when its flags argument ``arg`` has a bit outside
    ``allowed``: one rule per bit, since a BPF comparison cannot say 'any bit
    outside this mask'."""
    cdef scmp_arg_cmp cmp
    cdef int nr = seccomp_syscall_resolve_name(name)
    cdef int rc, bit
    cmp.arg = arg
    cmp.op = SCMP_CMP_MASKED_EQ
    for bit in range(32):
        if allowed & (1 << bit):
            continue
        cmp.datum_a = 1 << bit
        cmp.datum_b = 1 << bit
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, nr, 1, &cmp)
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for {name.decode()} flag {1 << bit:#x}")
