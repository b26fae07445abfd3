# A pid namespace of its own per environment (parent side). Before forking
# the environment, the zygote unshares CLONE_NEWPID (which only affects its
# next children), starts sandbox-init as the namespace's pid 1, forks the
# environment into it as pid 2, then sets its own children's namespace back.
# Both are the zygote's children: it reaps the environment with its exact
# wait status, then kills init, which kills anything left in the namespace.

# The namespace's init by the environment's pid (as the zygote sees them),
# and the other way round.
cdef dict _namespace_inits = {}
cdef dict _init_owners = {}
cdef int _own_pidns_fd = -1
cdef int _self_pidfd = -1
cdef pid_t _self_pidfd_owner = 0


cdef int _own_pid_namespace() except -1:
    """An fd of this process's own pid namespace, to return to."""
    global _own_pidns_fd
    if _own_pidns_fd < 0:
        _own_pidns_fd = open(b"/proc/self/ns/pid", O_RDONLY | O_CLOEXEC)
        if _own_pidns_fd < 0:
            raise OSError(errno, "opening /proc/self/ns/pid")
    return _own_pidns_fd


cdef int _parent_pidfd(pid_t self_pid) except -2:
    """A pidfd of this process: a child in another pid namespace sees its
    parent as pid 0, so it polls this to learn whether its parent died."""
    global _self_pidfd, _self_pidfd_owner
    if _self_pidfd_owner != self_pid:
        _self_pidfd = <int>syscall(SYS_pidfd_open, self_pid, 0)
        if _self_pidfd < 0:
            raise OSError(errno, "pidfd_open of the zygote")
        fcntl(_self_pidfd, F_SETFD, FD_CLOEXEC)
        _self_pidfd_owner = self_pid
    return _self_pidfd


cdef pid_t _start_pid_namespace(const char *init_path) except -1:
    """unshare(CLONE_NEWPID) and start its init; the next fork joins it.

    Raises:
        SpawnError: stage "pid_namespace".
    """
    cdef pid_t init_pid = 0
    cdef int rc
    cdef char *argv[5]
    cdef char *envp[1]
    # Its parent's pid, for init to check once it has armed its death signal.
    cdef bytes parent = str(_os.getpid()).encode()
    argv[0] = <char *>init_path
    argv[1] = b"-"
    argv[2] = b"-"
    argv[3] = <char *>parent
    argv[4] = NULL
    envp[0] = NULL
    _own_pid_namespace()
    if unshare(CLONE_NEWPID) != 0:
        raise SpawnError(errno, "pid_namespace")
    rc = posix_spawn(&init_pid, init_path, NULL, NULL, argv, envp)
    if rc != 0:
        _leave_pid_namespace()
        raise SpawnError(rc, "pid_namespace")
    return init_pid


cdef pid_t _join_pid_namespace(object ahead) except -1:
    """Makes the next fork join a namespace from prepare_pid_namespace().

    Raises:
        SpawnError: stage "pid_namespace" (its init is ended).
    """
    cdef pid_t init_pid = ahead[0]
    _own_pid_namespace()
    if setns(<int>ahead[1], CLONE_NEWPID) != 0:
        err = errno
        _end_init(init_pid)
        raise SpawnError(err, "pid_namespace")
    return init_pid


def prepare_pid_namespace(init_path):
    """A pid namespace with its init (``init_path``, sandbox-init) running,
    made ahead of demand: a zygote makes them while idle, so that a spawn
    only joins one (``pid_namespace_ahead`` of spawn()).

    Returns:
        (init_pid, fd of the namespace); the caller closes the fd once a
        spawn used it.
    Raises:
        SpawnError: stage "pid_namespace".
    """
    cdef pid_t init_pid = _start_pid_namespace(_os.fsencode(init_path))
    cdef int fd = open(b"/proc/self/ns/pid_for_children", O_RDONLY | O_CLOEXEC)
    cdef int err = errno
    _leave_pid_namespace()
    if fd < 0:
        _end_init(init_pid)
        raise SpawnError(err, "pid_namespace")
    return init_pid, fd


cdef void _leave_pid_namespace() noexcept:
    """This process's next children are born in its own pid namespace again."""
    setns(_own_pidns_fd, CLONE_NEWPID)


cdef void _end_init(pid_t init_pid) noexcept:
    cdef int status = 0
    kill(init_pid, SIGKILL)
    with nogil:
        waitpid(init_pid, &status, 0)


def close_namespace_fds():
    """Closes the fds spawn() keeps open for pid namespaces (this process's
    own pid namespace and a pidfd of it). A process that spawned once (the
    dispatcher's host probe) need not keep them; the next spawn reopens them."""
    global _own_pidns_fd, _self_pidfd, _self_pidfd_owner
    if _own_pidns_fd >= 0:
        close(_own_pidns_fd)
        _own_pidns_fd = -1
    if _self_pidfd >= 0 and _self_pidfd_owner == _os.getpid():
        close(_self_pidfd)
    _self_pidfd = -1
    _self_pidfd_owner = 0


def end_pid_namespace(pid_t pid):
    """After reaping environment ``pid``: kills its namespace's init, which
    kills every process left in the namespace, and reaps the init. A no-op
    for an environment without a pid namespace.

    Returns:
        Whether ``pid`` had a namespace.
    """
    init_pid = _namespace_inits.pop(pid, None)
    if init_pid is None:
        return False
    del _init_owners[init_pid]
    _end_init(init_pid)
    return True


def forget_namespace_init(pid_t pid):
    """Called for each child a wait for any child reaped: when ``pid`` was a
    namespace's init (it died before its environment), forgets it, so that
    its number, free for reuse now, is never killed.

    Returns:
        Whether ``pid`` was an init.
    """
    owner = _init_owners.pop(pid, None)
    if owner is None:
        return False
    del _namespace_inits[owner]
    return True


cdef void _forget_pid_namespaces() noexcept:
    """A snapshot child's view: the parent's inits and fds are not its own
    (the fds were closed by the child's set-up)."""
    global _own_pidns_fd, _self_pidfd, _self_pidfd_owner
    _namespace_inits.clear()
    _init_owners.clear()
    _own_pidns_fd = -1
    _self_pidfd = -1
    _self_pidfd_owner = 0


cdef void _register_init(pid_t pid, pid_t init_pid) noexcept:
    _namespace_inits[pid] = init_pid
    _init_owners[init_pid] = pid
