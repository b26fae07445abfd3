# Pages a first start writes, learned from one environment and written ahead
# by the next spare child. A forked child shares every page with its zygote
# until it writes it, and each first write is a fault and a copy (~3 us on a
# VM); the start of an environment writes some hundreds of the same pages
# every time (the runtime's objects, the allocator's pools, the import
# system's caches). A spare writes them while it waits for its function, off
# the start's path; they are pages the environment would have copied anyway.

from libc.stdint cimport uint64_t

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)

cdef extern from *:
    """
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23  /* Linux 5.14 */
    #endif
    """
    int MADV_POPULATE_WRITE

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    # /proc/<pid>/pagemap entry bits
    PM_PRESENT_BIT = 63
    PM_EXCLUSIVE_BIT = 56


def written_pages(pid_t pid, Py_ssize_t max_pages):
    """The pages process ``pid`` holds for itself alone in its private
    writable mappings (pagemap's "present" and "exclusively mapped"): in a
    child forked from this process, those it wrote since (copies) or mapped
    anew. The caller needs ptrace read access to ``pid``.

    Returns:
        Sorted ``(start, end)`` address ranges of at most ``max_pages``
        pages in all, lowest addresses first.
    Raises:
        OSError: its maps or pagemap cannot be read (it exited, say).
    """
    cdef list ranges = []
    cdef Py_ssize_t taken = 0, i, n
    cdef uint64_t start, end, address, entry
    cdef const unsigned char[:] view
    cdef const uint64_t *entries
    cdef uint64_t last_end = 0
    lines = _read_whole(f"/proc/{pid}/maps").splitlines()
    fd = _os.open(f"/proc/{pid}/pagemap", _os.O_RDONLY | _os.O_CLOEXEC)
    try:
        for line in lines:
            fields = line.split(None, 5)
            # rw-p: private and writable (anonymous, heap, stack, .data)
            if len(fields) < 2 or fields[1][:2] != b"rw" or fields[1][3:4] != b"p":
                continue
            bounds = fields[0].split(b"-")
            start = int(bounds[0], 16)
            end = int(bounds[1], 16)
            data = _os.pread(fd, <Py_ssize_t>((end - start) >> PAGE_SHIFT) * 8,
                             <Py_ssize_t>((start >> PAGE_SHIFT) * 8))
            n = len(data) // 8
            if n == 0:
                continue
            view = data
            entries = <const uint64_t *>&view[0]
            for i in range(n):
                entry = entries[i]
                if not ((entry >> PM_PRESENT_BIT) & 1 and (entry >> PM_EXCLUSIVE_BIT) & 1):
                    continue
                address = start + (<uint64_t>i << PAGE_SHIFT)
                if ranges and last_end == address:
                    ranges[len(ranges) - 1][1] = address + PAGE_SIZE
                else:
                    ranges.append([address, address + PAGE_SIZE])
                last_end = address + PAGE_SIZE
                taken += 1
                if taken >= max_pages:
                    return [tuple(r) for r in ranges]
    finally:
        _os.close(fd)
    return [tuple(r) for r in ranges]


cdef bytes _read_whole(str path):
    fd = _os.open(path, _os.O_RDONLY | _os.O_CLOEXEC)
    chunks = []
    try:
        while True:
            chunk = _os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        _os.close(fd)


def write_ahead(ranges, int stop_fd=-1):
    """Writes (populates, copying what is shared) the pages of ``ranges`` in
    this process, ahead of its use: madvise(MADV_POPULATE_WRITE) on each,
    which never faults the process; a range no longer mapped, or not
    writable here, is skipped. Stops early once ``stop_fd`` is readable
    (the assignment came: the pages left are written when used).

    Returns:
        The number of pages written; -1 where the kernel cannot (before 5.14).
    """
    cdef Py_ssize_t written = 0
    cdef uint64_t start, end
    cdef bint known = False  # the kernel knows MADV_POPULATE_WRITE
    cdef pollfd stop
    stop.fd = stop_fd
    stop.events = POLLIN
    for start, end in ranges:
        stop.revents = 0
        if stop_fd >= 0 and poll(&stop, 1, 0) > 0:
            return written
        if madvise(<void *><size_t>start, <size_t>(end - start), MADV_POPULATE_WRITE) == 0:
            written += <Py_ssize_t>((end - start) >> PAGE_SHIFT)
            known = True
        elif errno != EINVAL:
            known = True
    return written if known or not ranges else -1
