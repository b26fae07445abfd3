/* sandbox-init: pid 1 of an execution environment's pid namespace.
 *
 * The zygote starts it (posix_spawn, right after unshare(CLONE_NEWPID)) before
 * forking the environment itself into the namespace as pid 2. It never runs
 * function code: it gives up every privilege, then reaps the processes that
 * are orphaned inside the namespace, until the zygote kills it when the
 * environment ends, which kills whatever is left in the namespace with it.
 *
 * Being pid 1 here rather than the environment keeps the environment's
 * signal semantics ordinary: pid 1 ignores signals it has no handler for, so
 * kill(getpid(), SIGKILL) would do nothing in a handler that was pid 1.
 *
 * Usage: sandbox-init [UID GID [PARENT]] (UID and GID "-" keep uid 0 without
 * capabilities; PARENT, the zygote's pid as the host sees it, lets it notice
 * that the zygote died before the parent-death signal was armed)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <string.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void drop_privileges(const char *uid_arg, const char *gid_arg) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    int cap;
    for (cap = 0; cap < 64; cap++)
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    if (uid_arg[0] != '-') {
        gid_t gid = (gid_t)strtoul(gid_arg, NULL, 10);
        uid_t uid = (uid_t)strtoul(uid_arg, NULL, 10);
        if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
            setresuid(uid, uid, uid) != 0)
            _exit(126);
    }
    if (syscall(SYS_capset, &header, data) != 0)
        _exit(126);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* The parent's pid as the host sees it: /proc is still the host's here (this
 * process shares the zygote's mount namespace), while getppid() says 0 for a
 * parent outside the namespace. -1 when it cannot be read. */
static long host_parent_pid(void) {
    char buf[512];
    char *p;
    ssize_t n;
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    p = strrchr(buf, ')');  /* after the command name, which may hold spaces */
    if (p == NULL || p[1] == '\0' || p[2] == '\0')
        return -1;
    /* ") S PPID ..." */
    return strtol(p + 4, NULL, 10);
}

int main(int argc, char **argv) {
    sigset_t all, chld;
    int sig;
    /* It has no business with any descriptor the zygote had open. */
    syscall(SYS_close_range, 0, ~0U, 0);
    /* Die with the zygote, which is outside the namespace; if it died before
     * this was armed, it was not its parent any more by then. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (argc > 3 && host_parent_pid() != strtol(argv[3], NULL, 10))
        _exit(0);
    drop_privileges(argc > 1 ? argv[1] : "-", argc > 2 ? argv[2] : "-");
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);  /* a uid change cleared it */
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (sigwait(&chld, &sig) != 0 && errno != EINTR)
            pause();
    }
}
