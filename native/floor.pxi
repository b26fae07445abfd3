# The physical floor the benchmarks compare against: what a bare fork of this
# process costs when the child runs no Python at all.


def fork_exit_wait(int rounds):
    """Times ``rounds`` bare fork() + _exit(0) + waitpid() cycles.

    Returns:
        A list of per-round durations in seconds.
    """
    cdef timespec t0, t1
    cdef pid_t pid
    cdef int status = 0, i
    out = []
    for i in range(rounds):
        clock_gettime(CLOCK_MONOTONIC, &t0)
        pid = fork()
        if pid == 0:
            _exit(0)
        if pid < 0:
            raise OSError(errno, "fork")
        with nogil:
            waitpid(pid, &status, 0)
        clock_gettime(CLOCK_MONOTONIC, &t1)
        out.append((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9)
    return out
