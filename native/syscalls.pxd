# Declarations only: the C and CPython calls the native core makes.
# Everything used between fork() and the first Python line in a child must be
# async-signal-safe; those calls are grouped under "child-safe" below.

from posix.types cimport pid_t
from posix.resource cimport rusage, rlimit


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EINTR
        EAGAIN
        ECHILD
        ESRCH
        EBADF
        EINVAL
        EPROTO


cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    ctypedef void (*sighandler_t)(int)
    sighandler_t signal(int signum, sighandler_t handler)
    sighandler_t SIG_DFL
    int sigemptyset(sigset_t *set)
    int sigaddset(sigset_t *set, int signum)
    int sigprocmask(int how, const sigset_t *set, sigset_t *oldset)
    int kill(pid_t pid, int sig)
    int killpg(pid_t pgrp, int sig)
    enum:
        SIG_BLOCK
        SIG_SETMASK
        SIGCHLD
        SIGKILL
        SIGPIPE
        NSIG


cdef extern from "<sys/signalfd.h>" nogil:
    struct signalfd_siginfo:
        unsigned int ssi_signo
    int signalfd(int fd, const sigset_t *mask, int flags)
    enum:
        SFD_CLOEXEC
        SFD_NONBLOCK


cdef extern from "<unistd.h>" nogil:
    # child-safe
    pid_t fork()
    void _exit(int status)
    pid_t setsid()
    pid_t getppid()
    int dup2(int oldfd, int newfd)
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int execve(const char *path, char *const argv[], char *const envp[])
    # parent only
    int pipe2(int pipefd[2], int flags)
    long syscall(long number, ...)


cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, ...)
    int open(const char *path, int flags, ...)
    enum:
        F_DUPFD
        F_DUPFD_CLOEXEC
        F_SETFD
        FD_CLOEXEC
        O_CLOEXEC
        O_RDONLY


cdef extern from "<sys/syscall.h>" nogil:
    enum:
        SYS_close_range
        SYS_pidfd_open
cdef extern from "<sched.h>" nogil:
    int setns(int fd, int nstype)
    enum:
        CLONE_NEWPID
        CLONE_NEWNET
        CLONE_NEWUSER
cdef extern from "<spawn.h>" nogil:
    # parent only; NULL file actions and attributes
    int posix_spawn(pid_t *pid, const char *path, const void *file_actions,
                    const void *attrp, char *const argv[], char *const envp[])


cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5)
    enum:
        PR_SET_PDEATHSIG


cdef extern from "<sys/resource.h>" nogil:
    int setrlimit(int resource, const rlimit *rlim)


cdef extern from "<sys/wait.h>" nogil:
    pid_t waitpid(pid_t pid, int *status, int options)
    pid_t wait4(pid_t pid, int *status, int options, rusage *usage)
    enum:
        WNOHANG


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLHUP
        POLLERR


cdef extern from "<sys/socket.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    ssize_t recvmsg(int sockfd, msghdr *msg, int flags)
    ssize_t sendmsg(int sockfd, const msghdr *msg, int flags)
    int socketpair(int domain, int type, int protocol, int sv[2])
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    enum:
        SOL_SOCKET
        SCM_RIGHTS
        MSG_CMSG_CLOEXEC
        MSG_TRUNC
        MSG_CTRUNC
        MSG_NOSIGNAL
        AF_UNIX
        SOCK_SEQPACKET
        SOCK_CLOEXEC


cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    enum:
        CLOCK_MONOTONIC


cdef extern from "Python.h":
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()
