"""``sandbox stress``: normal and misbehaving functions at once, then a leak check.

Layout: :mod:`.mix` (parsing ``noop:70,crash:5,…``), :mod:`.handlers` (the
functions of each kind and the outcomes each may have), :mod:`.driver` (the
concurrent callers and the dispatcher's RSS/fd samples), :mod:`.leaks` (what
a run may leave behind) and :mod:`.command` (the run as a whole).
"""
