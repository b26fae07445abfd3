"""``sandbox bench``: this runtime's start kinds against peers and the physical floor.

Layout: :mod:`.cases` (what one sample of each case measures), :mod:`.runner`
(interleaved rounds), :mod:`.stats` (percentiles), :mod:`.tree` (a new
function's first start via the zygote tree), :mod:`.tree_memory` (what the
tree's processes share), :mod:`.sweeps` (concurrency, function count, payload
size, idle memory), :mod:`.report` (bench.json, the
pytest-benchmark JSON, Markdown, PNG plots) and :mod:`.command` (the run as a
whole). :mod:`.peer_worker` is the code the multiprocessing peers run.
"""
