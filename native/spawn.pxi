# Parent side of a spawn: everything that allocates happens here, before
# fork(); the child runs only _child_setup and then either returns to Python
# (a snapshot of this interpreter) or execs a fresh one (a cold start).

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memset
from posix.resource cimport getrlimit, rlimit, rlim_t, RLIMIT_NOFILE, RLIM_INFINITY
import os as _os


class SpawnError(OSError):
    """A child failed one set-up step between fork and its first instruction.

    ``stage`` names the step ("setsid", "fds", "exec", ...); ``errno`` and
    ``strerror`` are those of the failing system call.
    """

    def __init__(self, err, stage):
        super().__init__(err, f"{_os.strerror(err)} (child set-up stage: {stage})")
        self.stage = stage


cdef char **_to_cstring_array(list items, list keepalive) except NULL:
    cdef Py_ssize_t i, n = len(items)
    cdef char **arr = <char **>PyMem_Malloc((n + 1) * sizeof(char *))
    if arr == NULL:
        raise MemoryError()
    for i in range(n):
        b = items[i] if isinstance(items[i], bytearray) else _os.fsencode(items[i])
        if b"\0" in b:
            PyMem_Free(arr)
            raise ValueError(f"embedded NUL byte in exec argument {items[i]!r}")
        if isinstance(b, bytearray):
            b.append(0)  # bytearray has no implicit NUL terminator
        keepalive.append(b)
        arr[i] = <char *>b
    arr[n] = NULL
    return arr


cdef void _free_limits(ChildLimits *limits) noexcept:
    PyMem_Free(limits.cgroup_fds)
    PyMem_Free(limits.rlimit_resources)
    PyMem_Free(limits.rlimit_values)


cdef void _free_isolation(sandbox_isolation *iso) noexcept:
    PyMem_Free(iso.keep_paths)
    PyMem_Free(iso.mask_paths)


cdef object _prepare_limits(ChildLimits *limits, object cgroup_fds, object rlimits):
    """Fills ``limits`` (freed with _free_limits) from spawn()'s arguments."""
    cdef Py_ssize_t i
    cdef list rl = [tuple(r) for r in rlimits]
    cdef list cg = [int(fd) for fd in cgroup_fds]
    limits.n_cgroup_fds = len(cg)
    limits.n_rlimits = len(rl)
    limits.cgroup_fds = <int *>PyMem_Malloc((len(cg) + 1) * sizeof(int))
    limits.rlimit_resources = <int *>PyMem_Malloc((len(rl) + 1) * sizeof(int))
    limits.rlimit_values = <rlimit *>PyMem_Malloc((len(rl) + 1) * sizeof(rlimit))
    if (limits.cgroup_fds == NULL or limits.rlimit_resources == NULL
            or limits.rlimit_values == NULL):
        _free_limits(limits)
        raise MemoryError()
    try:
        for i in range(len(cg)):
            limits.cgroup_fds[i] = cg[i]
        for i in range(len(rl)):
            limits.rlimit_resources[i] = rl[i][0]
            limits.rlimit_values[i].rlim_cur = _rlim(rl[i][1])
            limits.rlimit_values[i].rlim_max = _rlim(rl[i][2])
    except BaseException:
        _free_limits(limits)
        raise


cdef rlim_t _rlim(object value) except? 0:
    """An rlimit value; None or -1 means unlimited."""
    if value is None or value == -1:
        return RLIM_INFINITY
    return <rlim_t>value


cdef int _max_fd() noexcept:
    cdef rlimit rl
    if getrlimit(RLIMIT_NOFILE, &rl) == 0 and rl.rlim_cur < 1048576:
        return <int>rl.rlim_cur
    return 65536


cdef object _read_verdict(int fd):
    """Reads the child's set-up report: b"" means every step succeeded."""
    cdef char buf[96]
    cdef ssize_t n
    cdef Py_ssize_t total = 0
    out = bytearray()
    while total < 95:
        with nogil:
            n = read(fd, buf, 95 - total)
        if n < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, "reading the child's set-up report")
        if n == 0:
            break
        out += buf[:n]
        total += n
    return bytes(out)


cdef object _spawn_error(bytes verdict):
    """The SpawnError of a child's set-up report ("OSError:<hex errno>:<stage>")."""
    _, hex_errno, stage = verdict.decode("ascii", "replace").split(":", 2)
    return SpawnError(int(hex_errno, 16), stage)


cdef object _prepare_isolation(sandbox_isolation *iso, sock_fprog *prog, object spec,
                               list keepalive):
    """Fills ``iso`` from the ``isolation`` mapping of spawn()."""
    iso.parent_pidfd = -1
    iso.netns_fd = -1
    if not spec:
        return
    if spec.get("netns_fd") is not None:
        iso.netns_fd = spec["netns_fd"]
    iso.unshare_flags = spec.get("unshare", 0)
    iso.user_namespace = bool(spec.get("user_namespace"))
    iso.private_mounts = bool(spec.get("private_mounts"))
    iso.tmp_only = bool(spec.get("tmp_only"))
    options = _os.fsencode(spec.get("tmp_options") or "mode=1777")
    keepalive.append(options)
    iso.tmp_options = <const char *>options
    masks = list(spec.get("mask_paths") or ())
    keep = list(spec.get("keep_paths") or ())
    if len(keep) > SANDBOX_MAX_KEEP_PATHS:
        raise ValueError(f"at most {SANDBOX_MAX_KEEP_PATHS} keep_paths, got {len(keep)}")
    for path in keep:
        if not path.startswith("/tmp/") and not any(path.startswith(m + "/") for m in masks):
            raise ValueError(f"keep path {path!r} is under neither /tmp nor a mask path")
    for path in masks:
        if not path.startswith("/") or path in ("/", "/tmp", "/proc"):
            raise ValueError(f"cannot mask {path!r}")
    if keep:
        # Writable copies: the child writes into these buffers (mkdir -p).
        iso.keep_paths = _to_cstring_array([bytearray(_os.fsencode(p)) for p in keep], keepalive)
        iso.n_keep_paths = len(keep)
    if masks:
        iso.mask_paths = _to_cstring_array(masks, keepalive)
        iso.n_mask_paths = len(masks)
    iso.mount_proc = bool(spec.get("mount_proc"))
    iso.undumpable = bool(spec.get("undumpable"))
    hostname = spec.get("hostname")
    if hostname:
        name = hostname.encode()
        keepalive.append(name)
        iso.hostname = <const char *>name
    iso.loopback_up = bool(spec.get("loopback_up"))
    iso.drop_capabilities = bool(spec.get("drop_capabilities"))
    if spec.get("uid") is not None:
        iso.switch_ids = 1
        iso.uid = spec["uid"]
        iso.gid = spec["gid"]
    iso.no_new_privs = bool(spec.get("no_new_privs"))
    iso.spare = bool(spec.get("spare"))
    program = spec.get("seccomp")
    if program:
        if len(program) % 8:
            raise ValueError("a seccomp program is a whole number of 8-byte instructions")
        program = bytes(program)
        keepalive.append(program)
        prog.len = len(program) // 8
        prog.filter = <void *><const char *>program
        iso.seccomp = prog


def spawn(int chan_fd, int log_fd, exec_argv=None, exec_env=None, cgroup_fds=(),
          rlimits=(), isolation=None):
    """Forks an execution environment.

    In the child, fd 3 becomes ``chan_fd``, fds 1 and 2 become ``log_fd``,
    every other fd above 2 is closed, the child leads a new session, dies
    with this process, writes itself into each of ``cgroup_fds`` (open
    ``cgroup.procs`` files) and applies ``rlimits`` (``(resource, soft,
    hard)`` triples), then takes the ``isolation`` steps (a mapping: unshare
    flags, private_mounts, tmp_options, keep_paths, mask_paths, mount_proc,
    hostname, loopback_up, drop_capabilities, uid and gid, no_new_privs,
    undumpable, seccomp program bytes, user_namespace and tmp_only for a
    child of a zygote without capabilities (see
    _child_isolate_in_user_namespace: it asks for its ids on ``chan_fd``
    and waits for the answer before its set-up goes on), netns_fd from
    prepare_network_namespace(), pid_namespace_ahead from
    prepare_pid_namespace(), spare: see take_placement). With ``pid_namespace`` (and
    ``init_path``, the sandbox-init program) the child is pid 2 of a pid
    namespace of its own whose init is also a child of this process; after
    reaping the child, call end_pid_namespace(pid) (serve() does).
    Without ``exec_argv`` the child returns 0 and goes on
    running this interpreter (a snapshot start); with it, the child execs
    ``exec_argv`` with environment ``exec_env`` (a cold start).

    Returns:
        The child's pid in the parent; 0 in a snapshot child.
    Raises:
        SpawnError: a set-up step failed in the child (already reaped), or
            the pid namespace could not be made (stage "pid_namespace").
        OSError: fork itself failed.
    """
    cdef int pipefd[2]
    cdef pid_t pid = -1, init_pid = 0, zygote_pid = _os.getpid()
    cdef int saved_errno = 0, status = 0
    cdef int max_fd = _max_fd()
    cdef bint do_exec = exec_argv is not None
    cdef char **argv = NULL
    cdef char **envp = NULL
    cdef list keepalive = []
    cdef ChildLimits limits
    cdef sandbox_isolation iso
    cdef sock_fprog prog
    cdef bint new_pidns = bool(isolation and isolation.get("pid_namespace"))
    cdef bytes init_path = _os.fsencode(isolation["init_path"]) if new_pidns else b""
    cdef object ahead = isolation.get("pid_namespace_ahead") if new_pidns else None

    memset(&iso, 0, sizeof(sandbox_isolation))
    _prepare_limits(&limits, cgroup_fds, rlimits)
    try:
        _prepare_isolation(&iso, &prog, isolation, keepalive)
        if new_pidns:
            iso.parent_pidfd = _parent_pidfd(zygote_pid)
    except BaseException:
        _free_isolation(&iso)
        _free_limits(&limits)
        raise
    if do_exec:
        argv = _to_cstring_array(list(exec_argv), keepalive)
        try:
            envp = _to_cstring_array(
                [f"{k}={v}" for k, v in (exec_env or {}).items()], keepalive)
        except BaseException:
            PyMem_Free(argv)
            _free_isolation(&iso)
            _free_limits(&limits)
            raise
    try:
        if pipe2(pipefd, O_CLOEXEC) != 0:
            raise OSError(errno, "pipe2 for the child's set-up report")
        if new_pidns:
            try:
                init_pid = (_join_pid_namespace(ahead) if ahead is not None
                            else _start_pid_namespace(init_path))
            except BaseException:
                close(pipefd[0])
                close(pipefd[1])
                raise
        if not do_exec:
            # A snapshot child goes on running Python: CPython's own fork
            # hooks (locks, threading state, os.register_at_fork) must run.
            PyOS_BeforeFork()
        pid = fork()
        if pid == 0:
            _child_setup(chan_fd, log_fd, pipefd[1], zygote_pid, max_fd, &limits, &iso)
            if do_exec:
                execve(argv[0], argv, envp)
                _report_and_exit(CHILD_ERROR_FD, errno, STAGE_EXEC)
            close(CHILD_ERROR_FD)
            PyOS_AfterFork_Child()
            _forget_parent_state()
            return 0
        saved_errno = errno
        if new_pidns:
            _leave_pid_namespace()
        if not do_exec:
            PyOS_AfterFork_Parent()
        close(pipefd[1])
    finally:
        PyMem_Free(argv)
        PyMem_Free(envp)
        _free_isolation(&iso)
        _free_limits(&limits)
    if pid < 0:
        close(pipefd[0])
        if init_pid > 0:
            _end_init(init_pid)
        raise OSError(saved_errno, "fork")
    if init_pid > 0:
        _register_init(pid, init_pid)
    try:
        verdict = _read_verdict(pipefd[0])
    finally:
        close(pipefd[0])
    if verdict:
        with nogil:
            waitpid(pid, &status, 0)
        end_pid_namespace(pid)
        raise _spawn_error(verdict)
    return pid


def take_placement(int chan_fd, int log_fd, cgroup_fds, rlimits, isolation,
                   pid_t zygote_pid, bint has_parent_pidfd):
    """In a spare child, once its zygote assigned it: the rest of the set-up
    spawn() does in a child, from the assignment's fds and isolation.

    A spare is a child spawned with ``spare`` in its isolation: it stopped
    after entering its namespaces, went on running this interpreter and
    waits for an assignment on fd 3, the zygote's pidfd (when it is in a pid
    namespace of its own: ``has_parent_pidfd``) on fd 5. The zygote made it
    ahead of demand, so an environment forked from a tree node costs this
    instead of a fork. Here it joins its cgroup, takes its rlimits, mounts,
    hostname, capabilities, ids and no_new_privs, then the fd layout of a
    child (channel on fd 3, log on 1 and 2) and last the seccomp filter.

    Each failing step is reported on fd 3 (where the zygote reads the
    verdict, as spawn() does) and ends the process; success closes fd 3's
    last copy, which the zygote sees as an empty verdict.
    """
    cdef ChildLimits limits
    cdef sandbox_isolation iso
    cdef sock_fprog prog
    cdef list keepalive = []
    cdef int max_fd = _max_fd()
    memset(&iso, 0, sizeof(sandbox_isolation))
    _prepare_limits(&limits, cgroup_fds, rlimits)
    try:
        _prepare_isolation(&iso, &prog, isolation, keepalive)
        iso.parent_pidfd = SPARE_PIDFD_FD if has_parent_pidfd else -1
        with nogil:
            _child_place(chan_fd, log_fd, CHILD_CHANNEL_FD, zygote_pid, max_fd, &limits, &iso)
        close(CHILD_ERROR_FD)
    finally:
        _free_isolation(&iso)
        _free_limits(&limits)


def assign_spare(int sock_fd, bytes data, fds):
    """Hands a spare child (see take_placement) its assignment: ``data`` (a
    SPAWN frame) and ``fds`` on ``sock_fd``, the zygote's end of the spare's
    fd 3; waits for the spare's verdict, then closes ``sock_fd``.

    Raises:
        SpawnError: a set-up step failed in the spare (it exits), or it
            died before it took its assignment (stage "spare").
        OSError: sending the assignment failed.
    """
    try:
        _send_packet(sock_fd, data, list(fds))
        verdict = _read_verdict(sock_fd)
    finally:
        close(sock_fd)
    if verdict:
        raise _spawn_error(verdict)


cdef void _forget_parent_state() noexcept:
    """In a snapshot child: the parent's namespaces and fds (closed by the
    set-up) are not its own; a function zygote spawns children of its own."""
    global _base_netns_fd
    _base_netns_fd = -1
    _forget_pid_namespaces()


def enter_network_namespace():
    """Moves this process into a new network namespace holding only a loopback
    interface, brought up. A zygote does this once, before INIT, for a
    function with network="none": INIT has no network either. (Its children
    each enter one of their own, from prepare_network_namespace().)

    Raises:
        OSError: unshare(CLONE_NEWNET) or bringing "lo" up failed.
    """
    if unshare(CLONE_NEWNET) != 0:
        raise OSError(errno, "unshare(CLONE_NEWNET)")
    if sandbox_loopback_up() != 0:
        raise OSError(errno, "bringing up the loopback interface")


cdef int _base_netns_fd = -1


def prepare_network_namespace():
    """A new network namespace holding only a loopback interface, brought up,
    as an fd for a child to enter (``netns_fd`` of spawn()); this process
    stays where it is. A zygote makes them while idle, so that a snapshot
    environment gets a network namespace of its own without paying the
    ~0.6 ms of creating one.

    Raises:
        OSError: unshare(CLONE_NEWNET), bringing "lo" up or returning failed.
    """
    global _base_netns_fd
    cdef int fd, err
    if _base_netns_fd < 0:
        _base_netns_fd = open(b"/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
        if _base_netns_fd < 0:
            raise OSError(errno, "opening /proc/self/ns/net")
    if unshare(CLONE_NEWNET) != 0:
        raise OSError(errno, "unshare(CLONE_NEWNET)")
    fd = -1
    err = 0
    if sandbox_loopback_up() != 0:
        err = errno
    else:
        fd = open(b"/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
        if fd < 0:
            err = errno
    if setns(_base_netns_fd, CLONE_NEWNET) != 0:
        # Stuck in the new namespace: this process must not go on serving.
        raise SystemExit(f"cannot return to the zygote's network namespace: "
                         f"{_os.strerror(errno)}")
    if fd < 0:
        raise OSError(err, "preparing a network namespace")
    return fd


def make_undumpable():
    """PR_SET_DUMPABLE 0 for this process (execve had reset it to 1)."""
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(errno, "prctl(PR_SET_DUMPABLE, 0)")
