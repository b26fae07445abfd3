"""The zygote tree: function zygotes forked from the base zygote or from a node
that imported exactly the packages they asked for, retired when idle, rebuilt
once when they die; and what forking means for state in the children."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from conftest import make_function, spares_of, tree_zygote_pids, wait_for, wait_gone

from sandbox import Runtime
from sandbox.errors import InvalidParameterValueException, ServiceException

REPORT_SOURCE = """
import gc, os, random, sys, time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"modules": sorted(m for m in ("yaml", "tomllib") if m in sys.modules),
            "random": random.random(), "urandom": os.urandom(8).hex(),
            "hash": hash("the same string"), "gc_enabled": gc.isenabled(),
            "frozen": gc.get_freeze_count()}
"""

# INIT imports yaml: the zygote reports it, and the next one forks from a node.
IMPORTS_YAML_SOURCE = "import yaml\n" + REPORT_SOURCE


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    if not runtime.capabilities()["isolation"]["isolated_init"]["enforced"]:
        pytest.skip("no isolated INIT here, so no zygote tree: "
                    + runtime.capabilities()["isolation"]["isolated_init"]["reason"])
    return runtime


def tree_nodes(rt: Runtime) -> dict[tuple[str, ...], dict]:
    return {tuple(n["packages"]): n for n in rt.zygote_tree()["tree"] if n["alive"]}


def zygote_of(rt: Runtime, name: str) -> dict:
    """The function's zygote, once the boot that its first start began is done."""
    assert wait_for(lambda: rt.zygote_tree()["functions"][name]["pid"] is not None), \
        rt.zygote_tree()
    return rt.zygote_tree()["functions"][name]


def test_the_first_start_forks_from_the_tree_and_later_ones_from_the_zygote(rt):
    """A function's first environment is forked from the base and runs INIT
    itself; its zygote boots meanwhile, forked from the base too, and the
    environments after it are forked from the zygote."""
    make_function(rt, "plain", REPORT_SOURCE)
    first = rt.invoke("plain", {})
    assert first.function_error is None, first.payload
    base = tree_nodes(rt)[()]
    assert psutil.Process(first.report["pid"]).ppid() == base["pid"]
    assert first.report["init_duration_ms"] is not None
    zygote = zygote_of(rt, "plain")
    assert zygote["parent"] == base["pid"]
    assert psutil.Process(zygote["pid"]).ppid() == base["pid"]
    assert rt.shutdown_idle("plain", wait=True) == 1
    later = rt.invoke("plain", {})
    assert later.report["start"] == "snapshot"
    assert psutil.Process(later.report["pid"]).ppid() == zygote["pid"]
    assert first.payload["modules"] == later.payload["modules"] == []


def test_preload_forks_from_a_node_that_only_functions_asking_for_it_use(rt):
    make_function(rt, "wants-yaml", REPORT_SOURCE, preload=["yaml"])
    make_function(rt, "plain", REPORT_SOURCE)
    with_yaml = rt.invoke("wants-yaml", {})
    plain = rt.invoke("plain", {})
    nodes = tree_nodes(rt)
    assert set(nodes) == {(), ("yaml",)}
    assert nodes[("yaml",)]["parent"] == nodes[()]["pid"]
    assert zygote_of(rt, "wants-yaml")["parent"] == nodes[("yaml",)]["pid"]
    assert with_yaml.payload["modules"] == ["yaml"]
    # A function never inherits a package it did not ask for.
    assert zygote_of(rt, "plain")["parent"] == nodes[()]["pid"]
    assert plain.payload["modules"] == []


def test_the_node_chosen_holds_the_most_asked_for_and_nothing_else(rt):
    make_function(rt, "a", REPORT_SOURCE, preload=["yaml"])
    make_function(rt, "b", REPORT_SOURCE, preload=["yaml", "tomllib"])
    make_function(rt, "c", REPORT_SOURCE, preload=["tomllib"])
    payloads = {name: rt.invoke(name, {}).payload for name in ("a", "b", "c")}
    nodes = tree_nodes(rt)
    assert set(nodes) == {(), ("yaml",), ("tomllib", "yaml"), ("tomllib",)}
    # b's node grew from a's; c's could not (it holds yaml), so it is the base's.
    assert nodes[("tomllib", "yaml")]["parent"] == nodes[("yaml",)]["pid"]
    assert nodes[("tomllib",)]["parent"] == nodes[()]["pid"]
    assert zygote_of(rt, "b")["parent"] == nodes[("tomllib", "yaml")]["pid"]
    assert zygote_of(rt, "c")["parent"] == nodes[("tomllib",)]["pid"]
    assert payloads == {**payloads, "a": {**payloads["a"], "modules": ["yaml"]},
                        "b": {**payloads["b"], "modules": ["tomllib", "yaml"]},
                        "c": {**payloads["c"], "modules": ["tomllib"]}}


def test_what_init_imported_picks_the_node_of_the_next_zygote(rt):
    make_function(rt, "learns", IMPORTS_YAML_SOURCE)
    assert rt.invoke("learns", {}).function_error is None
    first = zygote_of(rt, "learns")
    assert first["parent"] == tree_nodes(rt)[()]["pid"]
    assert "yaml" in first["imports"]
    assert rt.shutdown_idle("learns", wait=True) == 1
    rt._retire_idle_zygotes(0.0)
    assert rt.zygote_tree()["functions"]["learns"]["pid"] is None
    # This start forks from the node that now holds yaml; so does the zygote
    # it boots.
    r = rt.invoke("learns", {})
    assert r.function_error is None
    node = next(n for key, n in tree_nodes(rt).items() if "yaml" in key)
    assert psutil.Process(r.report["pid"]).ppid() == node["pid"]
    second = zygote_of(rt, "learns")
    assert second["parent"] == node["pid"] and second["pid"] != first["pid"]


def test_idle_zygotes_and_nodes_are_shut_down(tmp_path):
    with Runtime(tmp_path / "s", idle_timeout_s=1.0) as rt:
        if not rt.capabilities()["isolation"]["isolated_init"]["enforced"]:
            pytest.skip("no isolated INIT here")
        make_function(rt, "f", REPORT_SOURCE, preload=["yaml"])
        assert rt.invoke("f", {}).function_error is None
        zygote = zygote_of(rt, "f")["pid"]
        node = tree_nodes(rt)[("yaml",)]["pid"]
        assert wait_for(lambda: rt.zygote_tree()["functions"]["f"]["pid"] is None
                        and set(tree_nodes(rt)) == {()}, timeout=10), rt.zygote_tree()
        assert wait_for(lambda: not psutil.pid_exists(zygote) and not psutil.pid_exists(node))
        # Used again, it is rebuilt: a snapshot start as before.
        r = rt.invoke("f", {})
        assert r.function_error is None and r.report["start"] == "snapshot"


def test_a_zygote_that_dies_is_rebuilt_once_and_a_crash_loop_reported(rt):
    make_function(rt, "f", REPORT_SOURCE)

    def kill_zygote() -> None:
        assert rt.shutdown_idle("f", wait=True) == 1
        pid = zygote_of(rt, "f")["pid"]
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: rt.zygote_tree()["functions"]["f"]["pid"] is None)

    assert rt.invoke("f", {}).function_error is None
    kill_zygote()
    assert rt.invoke("f", {}).function_error is None  # rebuilt
    kill_zygote()
    with pytest.raises(ServiceException, match="zygote of function f died again"):
        rt.invoke("f", {})
    assert rt.invoke("f", {}).function_error is None  # the next one tries again


def test_children_share_the_hash_seed_but_not_random_state(rt):
    make_function(rt, "r", REPORT_SOURCE)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(
        rt.invoke("r", {"sleep": 0.3}).payload)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = results
    # random reseeds after fork (os.register_at_fork); urandom is the kernel's.
    assert first["random"] != second["random"]
    assert first["urandom"] != second["urandom"]
    # The hash seed is the base zygote's, chosen once per Runtime (documented).
    assert first["hash"] == second["hash"]
    # The collector is on in the environment; what the zygote held is frozen.
    assert first["gc_enabled"] is True and first["frozen"] > 0


def test_the_base_holds_no_secrets_and_one_thread(rt):
    make_function(rt, "f", REPORT_SOURCE, environment={"SECRET": "s3cr3t"})
    assert rt.invoke("f", {}).function_error is None
    base = psutil.Process(tree_nodes(rt)[()]["pid"])
    assert set(base.environ()) <= {"PATH", "LANG", "TZ", "PYTHONPATH"}
    assert base.num_threads() == 1
    assert base.uids().real == 0 and base.cwd() == "/"


def test_preload_is_validated(rt, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    with pytest.raises(InvalidParameterValueException, match="preload must be a list"):
        rt.create_function("f", handler="app.handler", code=str(code), preload="yaml")
    with pytest.raises(InvalidParameterValueException, match="module names"):
        rt.create_function("f", handler="app.handler", code=str(code), preload=["not a module"])
    with pytest.raises(InvalidParameterValueException, match="module names"):
        Runtime(tmp_path / "other", preload=["x;y"])


def test_a_missing_preload_package_is_reported_by_init_as_lambda_does(rt):
    make_function(rt, "missing", "import no_such_package_here\n" + REPORT_SOURCE,
                  preload=["no_such_package_here"])
    r = rt.invoke("missing", {})
    assert r.function_error == "Unhandled"
    assert r.payload["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_package_here" in r.payload["errorMessage"]


# -- spare children made ahead -----------------------------------------------------------------
def test_a_first_start_takes_the_spare_child_the_tree_made_ahead(rt):
    """Once the base forked one first start, it keeps a spare child made
    ahead (forked, in its namespaces): the next first start is handed to it
    instead of a fork, and another is made."""
    make_function(rt, "one", REPORT_SOURCE)
    one = rt.invoke("one", {})
    assert one.function_error is None, one.payload
    rt.wait_zygote_boot("one")  # its zygote, a child of the base too, is known then
    base = tree_zygote_pids(rt)[()]
    spare = wait_for(lambda: spares_of(rt, base, exclude={one.report["pid"]}))
    assert len(spare) == 1, spare
    make_function(rt, "two", REPORT_SOURCE)
    two = rt.invoke("two", {})
    assert two.function_error is None, two.payload
    assert {two.report["pid"]} == spare
    assert two.report["init_duration_ms"] is not None and two.payload["modules"] == []
    assert two.payload["random"] != one.payload["random"]
    # The next one is made, and is another process.
    rt.wait_zygote_boot("two")
    envs = {one.report["pid"], two.report["pid"]}
    assert wait_for(lambda: spares_of(rt, base, exclude=envs) - spare)


def test_a_spare_child_that_died_is_passed_over(rt):
    make_function(rt, "one", REPORT_SOURCE)
    one = rt.invoke("one", {})
    rt.wait_zygote_boot("one")
    base = tree_zygote_pids(rt)[()]
    spare = wait_for(lambda: spares_of(rt, base, exclude={one.report["pid"]}))
    assert spare
    for pid in spare:
        os.kill(pid, signal.SIGKILL)
    assert not wait_gone(spare)
    make_function(rt, "two", REPORT_SOURCE)
    two = rt.invoke("two", {})
    assert two.function_error is None, two.payload
    assert two.report["pid"] not in spare
    assert psutil.Process(two.report["pid"]).ppid() == base


def test_spares_write_ahead_the_pages_a_first_start_wrote(rt):
    """The base reads which pages a first start wrote (LEARN_AFTER_S after
    it), and every spare made after that writes them while it waits: they
    are its own (copied) before it is assigned."""
    from sandbox.worker.zygote import LEARN_AFTER_S

    make_function(rt, "one", REPORT_SOURCE)
    one = rt.invoke("one", {})  # forked: the base learns from it
    rt.wait_zygote_boot("one")
    base = tree_zygote_pids(rt)[()]
    envs = {one.report["pid"]}
    before = wait_for(lambda: spares_of(rt, base, exclude=envs))  # made before learning
    time.sleep(LEARN_AFTER_S * 3)
    before_private = private_dirty(*before)
    make_function(rt, "two", REPORT_SOURCE)
    envs.add(rt.invoke("two", {}).report["pid"])  # takes it; the next writes ahead
    rt.wait_zygote_boot("two")
    after = wait_for(lambda: spares_of(rt, base, exclude=envs))
    assert after and after != before
    assert wait_for(lambda: private_dirty(*after) > before_private + 2**19), \
        (before_private, private_dirty(*after))


def private_dirty(pid: int) -> int:
    """Bytes of pages only ``pid`` holds, written (smaps_rollup)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) * 1024
    return 0
