# Child set-up: runs in a new process between fork() and its first Python
# line (or its execve). As in CPython's _posixsubprocess, nothing here
# allocates or touches Python objects: only async-signal-safe system calls.
# A failing step writes "OSError:<hex errno>:<stage>" to the error pipe and
# exits with 255; the zygote turns that back into an OSError naming the stage.

cdef extern from *:
    """
    static const char *const sandbox_stage_names[] = {
        "signals", "setsid", "pdeathsig", "fds", "exec", "cgroup", "rlimit",
        "unshare", "mounts", "loopback", "hostname", "capabilities", "ids",
        "no_new_privs", "seccomp", "network_namespace", "user_namespace",
    };
    """
    const char *const sandbox_stage_names[]

cdef extern from "isolation.h" nogil:
    struct sock_fprog:
        unsigned short len
        void *filter
    ctypedef struct sandbox_isolation:
        int unshare_flags
        int user_namespace
        int private_mounts
        int tmp_only
        const char *tmp_options
        char **keep_paths
        int n_keep_paths
        char **mask_paths
        int n_mask_paths
        int mount_proc
        const char *hostname
        int loopback_up
        int drop_capabilities
        int switch_ids
        unsigned int uid
        unsigned int gid
        int no_new_privs
        int undumpable
        int parent_pidfd
        int netns_fd
        int spare
        sock_fprog *seccomp
    int unshare(int flags)
    int sethostname(const char *name, size_t len)
    size_t strlen(const char *s)
    int sandbox_setup_mounts(const sandbox_isolation *iso)
    int sandbox_loopback_up()
    int sandbox_drop_capabilities()
    int sandbox_isolate_ids(const sandbox_isolation *iso)
    int sandbox_switch_ids(const sandbox_isolation *iso)
    int sandbox_clear_capabilities()
    int sandbox_load_seccomp(const sandbox_isolation *iso)
    int SANDBOX_MAX_KEEP_PATHS
    int PR_SET_NO_NEW_PRIVS
    int PR_SET_DUMPABLE

cdef enum Stage:
    STAGE_SIGNALS = 0
    STAGE_SETSID = 1
    STAGE_PDEATHSIG = 2
    STAGE_FDS = 3
    STAGE_EXEC = 4
    STAGE_CGROUP = 5
    STAGE_RLIMIT = 6
    STAGE_UNSHARE = 7
    STAGE_MOUNTS = 8
    STAGE_LOOPBACK = 9
    STAGE_HOSTNAME = 10
    STAGE_CAPABILITIES = 11
    STAGE_IDS = 12
    STAGE_NO_NEW_PRIVS = 13
    STAGE_SECCOMP = 14
    STAGE_NETWORK_NAMESPACE = 15
    STAGE_USER_NAMESPACE = 16

# The fd layout every execution environment starts with.
cdef enum:
    CHILD_LOG_FD_OUT = 1
    CHILD_LOG_FD_ERR = 2
    CHILD_CHANNEL_FD = 3
    CHILD_ERROR_FD = 4
    CHILD_FIRST_FREE_FD = 5
    # A spare child keeps the zygote's pidfd here until it is assigned.
    SPARE_PIDFD_FD = 5
    # Sources are first moved at or above this number so that no dup2 onto
    # 1-5 can clobber another source.
    SCRATCH_FD = 16


cdef void _report_and_exit(int err_fd, int err, int stage) noexcept nogil:
    cdef char buf[64]
    cdef char digits[16]
    cdef const char *prefix = b"OSError:"
    cdef const char *name = sandbox_stage_names[stage]
    cdef int n = 0, k = 0
    cdef unsigned int value = <unsigned int>err
    while prefix[k] != 0:
        buf[n] = prefix[k]
        n += 1
        k += 1
    k = 0
    while True:
        digits[k] = b"0123456789abcdef"[value % 16]
        k += 1
        value //= 16
        if value == 0:
            break
    while k > 0:
        k -= 1
        buf[n] = digits[k]
        n += 1
    buf[n] = b":"
    n += 1
    k = 0
    while name[k] != 0 and n < 63:
        buf[n] = name[k]
        n += 1
        k += 1
    write(err_fd, buf, n)
    _exit(255)


cdef void _close_from(int first_fd, int max_fd) noexcept nogil:
    # close_range(2) needs Linux 5.9; older kernels get the plain loop.
    cdef int fd
    if syscall(SYS_close_range, first_fd, <unsigned int>0xFFFFFFFF, 0) == 0:
        return
    fd = first_fd
    while fd < max_fd:
        close(fd)
        fd += 1


cdef struct ChildLimits:
    # cgroup.procs files (one per hierarchy) the child writes itself into
    int *cgroup_fds
    int n_cgroup_fds
    # rlimits, applied in order
    int *rlimit_resources
    rlimit *rlimit_values
    int n_rlimits


cdef void _child_enter_namespaces(int err_fd, const sandbox_isolation *iso) noexcept nogil:
    """The network namespace made ahead, then the new namespaces: what a
    spare child (made ahead of its function) takes before it is assigned."""
    if iso.netns_fd >= 0 and setns(iso.netns_fd, CLONE_NEWNET) != 0:
        _report_and_exit(err_fd, errno, STAGE_NETWORK_NAMESPACE)
    if iso.unshare_flags and unshare(iso.unshare_flags) != 0:
        _report_and_exit(err_fd, errno, STAGE_UNSHARE)


cdef void _child_isolate(int err_fd, const sandbox_isolation *iso) noexcept nogil:
    """Inside its namespaces: mounts, capabilities, ids and no_new_privs, in
    that order."""
    if iso.private_mounts and sandbox_setup_mounts(iso) != 0:
        _report_and_exit(err_fd, errno, STAGE_MOUNTS)
    if iso.loopback_up and sandbox_loopback_up() != 0:
        _report_and_exit(err_fd, errno, STAGE_LOOPBACK)
    if iso.hostname != NULL and sethostname(iso.hostname, strlen(iso.hostname)) != 0:
        _report_and_exit(err_fd, errno, STAGE_HOSTNAME)
    if iso.drop_capabilities and sandbox_drop_capabilities() != 0:
        _report_and_exit(err_fd, errno, STAGE_CAPABILITIES)
    # A new uid clears every capability; staying uid 0 clears them explicitly.
    if (iso.switch_ids or iso.drop_capabilities) and sandbox_isolate_ids(iso) != 0:
        _report_and_exit(err_fd, errno, STAGE_IDS)
    if iso.no_new_privs and prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _report_and_exit(err_fd, errno, STAGE_NO_NEW_PRIVS)
    # Not dumpable where environments share a uid: processes of the same uid
    # without CAP_SYS_PTRACE (other environments) cannot open its
    # /proc/<pid>/mem, root, environ or fds. execve resets this; a cold
    # environment sets it again first thing.
    if iso.undumpable and prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        _report_and_exit(err_fd, errno, STAGE_CAPABILITIES)


cdef void _set_rlimits(int err_fd, const ChildLimits *limits) noexcept nogil:
    cdef int i
    for i in range(limits.n_rlimits):
        if setrlimit(limits.rlimit_resources[i], &limits.rlimit_values[i]) != 0:
            _report_and_exit(err_fd, errno, STAGE_RLIMIT)


cdef void _child_isolate_in_user_namespace(int err_fd, int chan_fd,
                                           const sandbox_isolation *iso) noexcept nogil:
    """The isolation of a child of a function zygote, which has no capability
    left (it ran the function's INIT): a user namespace of its own holds the
    new namespaces and the capabilities to set them up, for this child alone.

    The dispatcher, which alone may, maps the environment's uid and gid into
    the namespace and moves the child into its cgroup: the child asks by
    writing one byte on its channel (the kernel attaches its true pid) and
    waits for the answer, making its other namespaces meanwhile (a network
    namespace takes about half a millisecond; the capabilities to make them
    are the new user namespace's from the start). Then ids, mounts, network,
    hostname, and last every capability goes, bounding set included."""
    cdef char answer = 0
    cdef ssize_t n
    if unshare(CLONE_NEWUSER) != 0:
        _report_and_exit(err_fd, errno, STAGE_USER_NAMESPACE)
    if write(chan_fd, b"U", 1) != 1:
        _report_and_exit(err_fd, errno, STAGE_USER_NAMESPACE)
    if iso.unshare_flags and unshare(iso.unshare_flags) != 0:
        _report_and_exit(err_fd, errno, STAGE_UNSHARE)
    n = read(chan_fd, &answer, 1)
    while n < 0 and errno == EINTR:
        n = read(chan_fd, &answer, 1)
    if n != 1 or answer != b"G":
        _report_and_exit(err_fd, errno if n < 0 else EPROTO, STAGE_USER_NAMESPACE)
    if iso.switch_ids and sandbox_switch_ids(iso) != 0:
        _report_and_exit(err_fd, errno, STAGE_IDS)
    if iso.private_mounts and sandbox_setup_mounts(iso) != 0:
        _report_and_exit(err_fd, errno, STAGE_MOUNTS)
    if iso.loopback_up and sandbox_loopback_up() != 0:
        _report_and_exit(err_fd, errno, STAGE_LOOPBACK)
    if iso.hostname != NULL and sethostname(iso.hostname, strlen(iso.hostname)) != 0:
        _report_and_exit(err_fd, errno, STAGE_HOSTNAME)
    # Leaving a uid that is not 0 keeps capabilities: clear them explicitly.
    if sandbox_drop_capabilities() != 0 or sandbox_clear_capabilities() != 0:
        _report_and_exit(err_fd, errno, STAGE_CAPABILITIES)
    if iso.no_new_privs and prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _report_and_exit(err_fd, errno, STAGE_NO_NEW_PRIVS)


cdef void _die_with_zygote(int err_fd, pid_t zygote_pid,
                           const sandbox_isolation *iso) noexcept nogil:
    """Arms the parent-death signal, then checks that the zygote did not die
    before it was armed. In a pid namespace of its own the child sees its
    parent as pid 0, so it polls a pidfd of the zygote instead (readable once
    the zygote has exited)."""
    cdef pollfd p
    cdef bint gone
    if prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0:
        _report_and_exit(err_fd, errno, STAGE_PDEATHSIG)
    if iso.parent_pidfd >= 0:
        p.fd = iso.parent_pidfd
        p.events = POLLIN
        p.revents = 0
        gone = poll(&p, 1, 0) != 0
    else:
        gone = getppid() != zygote_pid
    if gone:
        _report_and_exit(err_fd, ESRCH, STAGE_PDEATHSIG)


cdef void _child_begin(int err_fd, pid_t zygote_pid,
                       const sandbox_isolation *iso) noexcept nogil:
    """Clean signal state, a session of its own, death with the zygote."""
    cdef sigset_t empty
    # The zygote blocks SIGCHLD and reads it from a signalfd; the child must
    # start with a clean mask and default dispositions for what it changed.
    sigemptyset(&empty)
    if sigprocmask(SIG_SETMASK, &empty, NULL) != 0:
        _report_and_exit(err_fd, errno, STAGE_SIGNALS)
    signal(SIGCHLD, SIG_DFL)

    # Own session and process group: the dispatcher kills the whole group.
    if setsid() < 0:
        _report_and_exit(err_fd, errno, STAGE_SETSID)

    # Die with the zygote.
    _die_with_zygote(err_fd, zygote_pid, iso)


cdef void _join_cgroups(int err_fd, const ChildLimits *limits) noexcept nogil:
    """Into the environment's cgroup before anything of the function runs.
    "0" means the writing process, on cgroup v1 and v2 alike."""
    cdef int i
    for i in range(limits.n_cgroup_fds):
        if write(limits.cgroup_fds[i], b"0", 1) != 1:
            _report_and_exit(err_fd, errno, STAGE_CGROUP)


cdef void _child_finish(int chan_fd, int log_fd, int err_fd, pid_t zygote_pid,
                        int max_fd, const sandbox_isolation *iso) noexcept nogil:
    """After its isolation: the fd layout, and last the seccomp filter."""
    cdef int c, l, e
    if iso.switch_ids:
        # A change of credentials cleared the parent-death signal: arm it again.
        _die_with_zygote(err_fd, zygote_pid, iso)

    c = fcntl(chan_fd, F_DUPFD, <int>SCRATCH_FD)
    l = fcntl(log_fd, F_DUPFD, <int>SCRATCH_FD)
    e = fcntl(err_fd, F_DUPFD_CLOEXEC, <int>SCRATCH_FD)
    if c < 0 or l < 0 or e < 0:
        _report_and_exit(err_fd, errno, STAGE_FDS)
    err_fd = e
    if (dup2(l, CHILD_LOG_FD_OUT) < 0 or dup2(l, CHILD_LOG_FD_ERR) < 0
            or dup2(c, CHILD_CHANNEL_FD) < 0 or dup2(e, CHILD_ERROR_FD) < 0):
        _report_and_exit(err_fd, errno, STAGE_FDS)
    err_fd = CHILD_ERROR_FD
    if fcntl(err_fd, F_SETFD, FD_CLOEXEC) < 0:  # gone on a successful exec
        _report_and_exit(err_fd, errno, STAGE_FDS)
    # Every other inherited descriptor goes: the zygote's control socket, its
    # signalfd, the scratch copies, anything the function's INIT opened.
    _close_from(CHILD_FIRST_FREE_FD, max_fd)
    # Last: from here on the denied system calls kill the process.
    if iso.seccomp != NULL and sandbox_load_seccomp(iso) != 0:
        _report_and_exit(err_fd, errno, STAGE_SECCOMP)


cdef void _child_place(int chan_fd, int log_fd, int err_fd, pid_t zygote_pid, int max_fd,
                       const ChildLimits *limits,
                       const sandbox_isolation *iso) noexcept nogil:
    """A privileged zygote's child inside its namespaces: its cgroup,
    rlimits, isolation, fd layout and filter. Also what a spare child does
    once it is assigned (take_placement)."""
    _join_cgroups(err_fd, limits)
    _set_rlimits(err_fd, limits)
    _child_isolate(err_fd, iso)
    _child_finish(chan_fd, log_fd, err_fd, zygote_pid, max_fd, iso)


cdef void _child_keep_as_spare(int chan_fd, int err_fd, int max_fd,
                               const sandbox_isolation *iso) noexcept nogil:
    """A spare child waits for its assignment on ``chan_fd`` (as fd 3), with
    the zygote's pidfd (if any) as fd 5 for take_placement; every other fd
    above 2 goes. Its stdout and stderr stay the zygote's until then."""
    cdef int c, e, p = -1
    c = fcntl(chan_fd, F_DUPFD, <int>SCRATCH_FD)
    e = fcntl(err_fd, F_DUPFD_CLOEXEC, <int>SCRATCH_FD)
    if iso.parent_pidfd >= 0:
        p = fcntl(iso.parent_pidfd, F_DUPFD_CLOEXEC, <int>SCRATCH_FD)
    if c < 0 or e < 0 or (iso.parent_pidfd >= 0 and p < 0):
        _report_and_exit(err_fd, errno, STAGE_FDS)
    err_fd = e
    if dup2(c, CHILD_CHANNEL_FD) < 0 or dup2(e, CHILD_ERROR_FD) < 0:
        _report_and_exit(err_fd, errno, STAGE_FDS)
    err_fd = CHILD_ERROR_FD
    if fcntl(err_fd, F_SETFD, FD_CLOEXEC) < 0:
        _report_and_exit(err_fd, errno, STAGE_FDS)
    if p >= 0 and dup2(p, SPARE_PIDFD_FD) < 0:
        _report_and_exit(err_fd, errno, STAGE_FDS)
    _close_from(SPARE_PIDFD_FD + 1 if p >= 0 else SPARE_PIDFD_FD, max_fd)


cdef void _child_setup(int chan_fd, int log_fd, int err_fd, pid_t zygote_pid,
                       int max_fd, const ChildLimits *limits,
                       const sandbox_isolation *iso) noexcept nogil:
    """Signal state, session, parent-death signal, namespaces, cgroup,
    rlimits, the rest of the isolation, fd layout and last the seccomp
    filter of a new child. A spare stops after its namespaces."""
    _child_begin(err_fd, zygote_pid, iso)
    if iso.user_namespace:
        # A forked zygote's child: the dispatcher moves it into its cgroup.
        _join_cgroups(err_fd, limits)
        # RLIMIT_NPROC counts the processes of a uid in a user namespace, and
        # of the namespace's owner (the zygote's uid) above it, up to the
        # limit its creator had: that must stay the zygote's (none), or the
        # environments of one function would share one budget.
        _child_isolate_in_user_namespace(err_fd, chan_fd, iso)
        _set_rlimits(err_fd, limits)
        _child_finish(chan_fd, log_fd, err_fd, zygote_pid, max_fd, iso)
        return
    _child_enter_namespaces(err_fd, iso)
    if iso.spare:
        _child_keep_as_spare(chan_fd, err_fd, max_fd, iso)
        return
    _child_place(chan_fd, log_fd, err_fd, zygote_pid, max_fd, limits, iso)
