# The fork-server loop a zygote waits in. It multiplexes two sources with
# poll(2): the control socket from the dispatcher (SOCK_SEQPACKET, one frame
# and its fds per packet) and a signalfd for SIGCHLD. Decoding frames is left
# to the Python ``dispatch`` object; forking and reaping happen here.

from libc.string cimport memcpy, memset

cdef enum:
    MAX_PACKET = 65536
    MAX_FDS_PER_PACKET = 8


cdef list _recv_packet(int fd, bytearray buf, bint *truncated):
    """recvmsg one packet; returns [data, fds] or None at end of stream."""
    cdef msghdr msg
    cdef iovec iov
    cdef char cbuf[256]   # >= CMSG_SPACE(MAX_FDS_PER_PACKET * sizeof(int))
    cdef cmsghdr *cmsg
    cdef ssize_t n
    cdef int i, nfds, received_fd
    cdef char *data = buf
    iov.iov_base = data
    iov.iov_len = MAX_PACKET
    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = &iov
    msg.msg_iovlen = 1
    msg.msg_control = cbuf
    msg.msg_controllen = CMSG_SPACE(MAX_FDS_PER_PACKET * sizeof(int))
    msg.msg_flags = 0
    while True:
        with nogil:
            n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)
        if n >= 0:
            break
        if errno != EINTR:
            raise OSError(errno, "recvmsg on the control socket")
    fds = []
    cmsg = CMSG_FIRSTHDR(&msg)
    while cmsg != NULL:
        if cmsg.cmsg_level == SOL_SOCKET and cmsg.cmsg_type == SCM_RIGHTS:
            nfds = <int>((cmsg.cmsg_len - CMSG_LEN(0)) // sizeof(int))
            for i in range(nfds):
                memcpy(&received_fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int))
                fds.append(received_fd)
        cmsg = CMSG_NXTHDR(&msg, cmsg)
    truncated[0] = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0
    if n == 0 and not fds:
        return None
    return [bytes(buf[:n]), fds]


cdef _send_packet(int fd, bytes data, list fds):
    """sendmsg one packet: ``data`` and ``fds`` (SCM_RIGHTS)."""
    cdef msghdr msg
    cdef iovec iov
    cdef char cbuf[256]   # >= CMSG_SPACE(MAX_FDS_PER_PACKET * sizeof(int))
    cdef cmsghdr *cmsg
    cdef ssize_t n
    cdef int i, one_fd
    if len(fds) > MAX_FDS_PER_PACKET:
        raise ValueError(f"at most {MAX_FDS_PER_PACKET} fds per packet, got {len(fds)}")
    iov.iov_base = <char *>data
    iov.iov_len = len(data)
    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = &iov
    msg.msg_iovlen = 1
    msg.msg_control = NULL
    msg.msg_controllen = 0
    msg.msg_flags = 0
    if fds:
        memset(cbuf, 0, sizeof(cbuf))
        msg.msg_control = cbuf
        msg.msg_controllen = CMSG_SPACE(len(fds) * sizeof(int))
        cmsg = CMSG_FIRSTHDR(&msg)
        cmsg.cmsg_level = SOL_SOCKET
        cmsg.cmsg_type = SCM_RIGHTS
        cmsg.cmsg_len = CMSG_LEN(len(fds) * sizeof(int))
        for i in range(len(fds)):
            one_fd = fds[i]
            memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &one_fd, sizeof(int))
    while True:
        with nogil:
            n = sendmsg(fd, &msg, MSG_NOSIGNAL)
        if n >= 0:
            return
        if errno != EINTR:
            raise OSError(errno, "sendmsg")


def recv_packet(int fd):
    """One packet and the fds it carried from ``fd`` (a SOCK_SEQPACKET
    socket), as ``[data, fds]``; None at end of stream.

    Raises:
        OSError: recvmsg failed, or the packet was truncated.
    """
    cdef bint truncated = False
    packet = _recv_packet(fd, bytearray(MAX_PACKET), &truncated)
    if truncated:
        for received in (packet[1] if packet else ()):
            close(received)
        raise OSError(EPROTO, "packet truncated (oversized frame or too many fds)")
    return packet


def spare_socketpair():
    """A SOCK_SEQPACKET socket pair (close-on-exec) between a zygote and a
    spare child: the zygote's end, the spare's end."""
    cdef int sv[2]
    if socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0:
        raise OSError(errno, "socketpair")
    return sv[0], sv[1]


cdef void _reap(object dispatch, set children) except *:
    cdef int status = 0
    cdef pid_t pid
    cdef rusage ru
    while True:
        with nogil:
            pid = wait4(-1, &status, WNOHANG, &ru)
        if pid <= 0:
            return
        if forget_namespace_init(pid):
            continue  # an init died before its environment: nothing to report
        children.discard(pid)
        # Descendants left in the environment's process group, or anywhere
        # in its pid namespace, go with it.
        killpg(pid, SIGKILL)
        end_pid_namespace(pid)
        dispatch.exited(
            pid, status, ru.ru_maxrss,
            ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
            ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
        )


cdef void _kill_all(set children) noexcept:
    cdef int status = 0
    cdef pid_t pid
    for pid in children:
        killpg(pid, SIGKILL)
        kill(pid, SIGKILL)
    for pid in children:
        with nogil:
            waitpid(pid, &status, 0)
        end_pid_namespace(pid)
    children.clear()


def serve(int ctrl_fd, object dispatch):
    """Runs the fork-server loop on ``ctrl_fd`` until the dispatcher goes away.

    ``dispatch`` decodes and answers frames:
      - ``dispatch.packet(data, fds, truncated)`` returns a list of spawn
        requests ``(chan_fd, log_fd, exec_argv, exec_env, cgroup_fds,
        rlimits, isolation, tag)``, or None to stop the loop;
      - ``dispatch.spawned(tag, pid, error)`` is told each outcome (``error``
        is the exception or None) and owns closing the request's fds;
      - ``dispatch.exited(pid, wait_status, maxrss_kb, utime_s, stime_s)``;
      - ``dispatch.idle()`` is called when nothing is waiting, for work done
        ahead of demand; it returns ``(requests, timeout_ms)``: spawn
        requests to run now (a spare child, say), and how long to wait for
        a frame before calling it again (-1: until one comes).

    Returns:
        None in the zygote, after the loop ended and every child was killed
        and reaped; the spawn request's ``tag`` in a snapshot child, which
        then continues as an execution environment with its channel on fd 3.
    """
    cdef pollfd fds[2]
    cdef sigset_t chld, old_mask
    cdef int sfd, rc
    cdef bint truncated = False
    cdef char drain[1024]
    cdef set children = set()
    cdef bytearray buf = bytearray(MAX_PACKET)
    cdef bint in_child = False
    cdef int idle_timeout_ms = 0

    sigemptyset(&chld)
    sigaddset(&chld, SIGCHLD)
    if sigprocmask(SIG_BLOCK, &chld, &old_mask) != 0:
        raise OSError(errno, "blocking SIGCHLD")
    sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)
    if sfd < 0:
        raise OSError(errno, "signalfd")
    try:
        while True:
            fds[0].fd = ctrl_fd
            fds[0].events = POLLIN
            fds[0].revents = 0
            fds[1].fd = sfd
            fds[1].events = POLLIN
            fds[1].revents = 0
            with nogil:
                rc = poll(fds, 2, idle_timeout_ms)
            if rc < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, "poll")
            if rc == 0:
                requests, idle_timeout_ms = dispatch.idle()
            else:
                idle_timeout_ms = 0
                if fds[1].revents:
                    while read(sfd, drain, sizeof(drain)) > 0:
                        pass
                    _reap(dispatch, children)
                if not fds[0].revents:
                    continue
                packet = _recv_packet(ctrl_fd, buf, &truncated)
                if packet is None:
                    return None
                requests = dispatch.packet(packet[0], packet[1], truncated)
                if requests is None:
                    return None
            for (chan_fd, log_fd, exec_argv, exec_env, cgroup_fds, rlimits, isolation,
                 tag) in requests:
                try:
                    pid = spawn(chan_fd, log_fd, exec_argv, exec_env, cgroup_fds, rlimits,
                                isolation)
                except OSError as exc:
                    dispatch.spawned(tag, 0, exc)
                    continue
                if pid == 0:
                    # This is the new environment (or a spare). The set-up
                    # closed every zygote fd; the signal mask was reset
                    # before Python ran.
                    in_child = True
                    children.clear()
                    return tag
                children.add(pid)
                dispatch.spawned(tag, pid, None)
    finally:
        # A snapshot child must not touch these: its set-up already reset the
        # mask, and sfd's number may now be its channel.
        if not in_child:
            _kill_all(children)
            close(sfd)
            sigprocmask(SIG_SETMASK, &old_mask, NULL)
