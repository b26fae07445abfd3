/* Isolation steps a child takes between fork and its first Python line.
 *
 * Plain C because every call here must be async-signal-safe: system calls
 * only, no allocation (the parent prepared every string and the seccomp
 * program). Each function returns 0, or -1 with errno set; the caller reports
 * the failing stage by name (see child.pxi).
 */
#ifndef SANDBOX_ISOLATION_H
#define SANDBOX_ISOLATION_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

typedef struct {
    int unshare_flags;           /* CLONE_NEW* for this child alone */
    int user_namespace;          /* the namespaces above go in a user namespace of the
                                    child's own, whose ids the dispatcher maps (and
                                    which it places in its cgroup) while it waits */
    int private_mounts;          /* a mount namespace of its own is set up */
    int tmp_only;                /* mounts: only a fresh /tmp and /dev/shm (the rest was
                                    made read-only by the zygote, and stays locked so) */
    const char *tmp_options;     /* tmpfs options for /tmp and /dev/shm */
    char **keep_paths;           /* directories under /tmp or a mask to stay visible
                                    (writable copies: mkdir -p edits them in place) */
    int n_keep_paths;
    char **mask_paths;           /* directories others may not enter, covered by an
                                    empty read-only tmpfs (keep paths under them return) */
    int n_mask_paths;
    int mount_proc;              /* a fresh /proc showing only processes it may ptrace */
    const char *hostname;        /* NULL: keep */
    int loopback_up;             /* bring "lo" up in a new network namespace */
    int drop_capabilities;
    int switch_ids;
    uid_t uid;
    gid_t gid;
    int no_new_privs;
    int undumpable;              /* PR_SET_DUMPABLE 0 (environments share a uid) */
    int parent_pidfd;            /* -1, or a pidfd of the zygote (own pid namespace) */
    int netns_fd;                /* -1, or a fresh network namespace to enter */
    int spare;                   /* stop after the namespaces: a spare child, which takes
                                    the rest when it is assigned (take_placement) */
    struct sock_fprog *seccomp;  /* NULL: no filter */
} sandbox_isolation;

#define SANDBOX_MAX_KEEP_PATHS 16
#define SANDBOX_MASK_OPTIONS "size=64k,nr_inodes=1024,mode=0755"


struct sandbox_mount_attr {
    unsigned long long attr_set;
    unsigned long long attr_clr;
    unsigned long long propagation;
    unsigned long long userns_fd;
};

/* mkdir -p of path (an absolute path in a writable buffer), then a bind of
 * the directory open as fd onto it, made read-only by a remount (``remount``)
 * or read-only already because its source mount is, and locked so. */
static int sandbox_expose(char *path, int fd, int remount) {
    char source[32];
    char *p;
    int i = 0, n;
    for (p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        n = mkdir(path, 0755);
        *p = '/';
        if (n != 0 && errno != EEXIST)
            return -1;
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return -1;
    /* "/proc/self/fd/<fd>", written by hand: snprintf is not async-signal-safe */
    memcpy(source, "/proc/self/fd/", 14);
    n = fd;
    {
        char digits[12];
        int k = 0;
        do { digits[k++] = (char)('0' + n % 10); n /= 10; } while (n);
        while (k)
            source[14 + i++] = digits[--k];
        source[14 + i] = '\0';
    }
    if (mount(source, path, NULL, MS_BIND | MS_REC, NULL) != 0)
        return -1;
    if (!remount)
        return 0;
    return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

/* The whole filesystem read-only, then fresh writable tmpfs on /tmp and
 * /dev/shm that no other environment can see. Directories that others may not
 * enter (/root holding the interpreter, say) are covered by an empty read-only
 * tmpfs, which also hides the rest of them. Directories the environment needs
 * under /tmp or a mask (its code, the interpreter) are bound back, read-only,
 * at their own paths. Last, a /proc of its own that lists only the processes
 * it may ptrace (hidepid=2), so that it sees no other environment.
 *
 * With tmp_only (a child of a function zygote, in a user namespace of its
 * own), the zygote did all of that already: only /tmp and /dev/shm are new,
 * and the directories under /tmp are bound back from the zygote's. */
static int sandbox_setup_mounts(const sandbox_isolation *iso) {
    struct sandbox_mount_attr attr;
    int fds[SANDBOX_MAX_KEEP_PATHS];
    int i, n = iso->n_keep_paths < SANDBOX_MAX_KEEP_PATHS ? iso->n_keep_paths
                                                          : SANDBOX_MAX_KEEP_PATHS;
    if (!iso->tmp_only && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return -1;
    for (i = 0; i < n; i++) {
        fds[i] = open(iso->keep_paths[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fds[i] < 0)
            return -1;
    }
    if (!iso->tmp_only) {
        memset(&attr, 0, sizeof(attr));
        attr.attr_set = MOUNT_ATTR_RDONLY;
        if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof(attr)) != 0)
            return -1;
    }
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, iso->tmp_options) != 0)
        return -1;
    for (i = 0; i < iso->n_mask_paths; i++) {
        if (mount("tmpfs", iso->mask_paths[i], "tmpfs", MS_NOSUID | MS_NODEV,
                  SANDBOX_MASK_OPTIONS) != 0)
            return -1;
    }
    for (i = 0; i < n; i++) {
        if (sandbox_expose(iso->keep_paths[i], fds[i], !iso->tmp_only) != 0)
            return -1;
        close(fds[i]);
    }
    for (i = 0; i < iso->n_mask_paths; i++) {
        if (mount(NULL, iso->mask_paths[i], NULL,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
            return -1;
    }
    if (access("/dev/shm", F_OK) == 0 &&
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              iso->tmp_options) != 0)
        return -1;
    if (iso->mount_proc &&
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") != 0)
        return -1;
    return 0;
}

static int sandbox_loopback_up(void) {
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    close(fd);
    return 0;
}

/* Root gets no capabilities back through exec or a uid change, and the
 * bounding set is emptied: nothing can regain a capability later. */
static int sandbox_drop_capabilities(void) {
    int cap;
    if (prctl(PR_SET_SECUREBITS,
              SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
              SECBIT_KEEP_CAPS_LOCKED, 0, 0, 0) != 0)
        return -1;
    /* Capabilities are numbered from 0 up to the kernel's last, which it
     * answers with EINVAL. */
    for (cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL)
                break;
            return -1;
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return -1;
    return 0;
}

/* Empties the effective, permitted and inheritable sets: for a child that
 * keeps uid 0 (it could not switch), root without capabilities. */
static int sandbox_clear_capabilities(void) {
    struct __user_cap_header_struct header;
    struct __user_cap_data_struct data[2];
    memset(&header, 0, sizeof(header));
    memset(data, 0, sizeof(data));
    header.version = _LINUX_CAPABILITY_VERSION_3;
    return (int)syscall(SYS_capset, &header, data);
}

static int sandbox_switch_ids(const sandbox_isolation *iso) {
    /* In a user namespace of its own, setgroups(2) is denied (the dispatcher
     * wrote "deny"); its zygote emptied the groups it inherits. */
    if (!iso->user_namespace && setgroups(0, NULL) != 0)
        return -1;
    if (setresgid(iso->gid, iso->gid, iso->gid) != 0)
        return -1;
    /* With no SECBIT_NO_SETUID_FIXUP, leaving uid 0 clears every capability. */
    if (setresuid(iso->uid, iso->uid, iso->uid) != 0)
        return -1;
    return 0;
}

static int sandbox_isolate_ids(const sandbox_isolation *iso) {
    if (iso->switch_ids)
        return sandbox_switch_ids(iso);
    return iso->drop_capabilities ? sandbox_clear_capabilities() : 0;
}

static int sandbox_load_seccomp(const sandbox_isolation *iso) {
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, iso->seccomp, 0, 0);
}

#endif
