"""Per-environment uid leases (sandbox/limits/uids.py): host-wide, exclusive,
returned on release and when the holder dies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandbox.errors import ServiceException
from sandbox.limits.uids import UidRange


@pytest.fixture
def lock_file(tmp_path):
    return str(tmp_path / "leases" / "uids")


def test_leases_are_exclusive_and_exhaust_the_range(lock_file):
    a = UidRange(5000, 3, lock_file)
    b = UidRange(5000, 3, lock_file)  # another Runtime of this host
    try:
        leases = [a.lease(), b.lease(), a.lease()]
        assert sorted(lease.uid for lease in leases) == [5000, 5001, 5002]
        with pytest.raises(ServiceException, match="all 3 uids from 5000 are leased"):
            b.lease()
        with pytest.raises(ServiceException):
            a.lease()
        leases[1].release()
        leases[1].release()  # idempotent
        again = a.lease()
        assert again.uid == leases[1].uid
        assert (a.leased, b.leased) == (3, 0)
    finally:
        a.close()
        b.close()


def test_a_dead_holders_leases_return(lock_file):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from sandbox.limits.uids import UidRange\n"
         f"r = UidRange(7000, 2, {lock_file!r})\n"
         "print(r.lease().uid, r.lease().uid, flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert sorted(map(int, holder.stdout.readline().split())) == [7000, 7001]
        mine = UidRange(7000, 2, lock_file)
        with pytest.raises(ServiceException):
            mine.lease()
        holder.kill()
        holder.wait()
        assert sorted([mine.lease().uid, mine.lease().uid]) == [7000, 7001]
        mine.close()
    finally:
        holder.kill()
        holder.wait()


def test_close_returns_every_lease(lock_file):
    a = UidRange(9000, 1, lock_file)
    a.lease()
    a.close()
    b = UidRange(9000, 1, lock_file)
    assert b.lease().uid == 9000
    b.close()
    assert oct(os.stat(os.path.dirname(lock_file)).st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("base,count", [(0, 10), (10, 0), (2**32 - 5, 10)])
def test_bad_ranges_are_refused(lock_file, base, count):
    with pytest.raises(ValueError, match="uid range"):
        UidRange(base, count, lock_file)
