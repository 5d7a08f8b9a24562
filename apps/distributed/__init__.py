"""Past one process: episode workers on Ray, one memory writer, generation on shared servers.

`insightloop daemon --workers N` and `insightloop eval --workers N` run here; without `--workers`
nothing in this package runs and Ray is never imported (it is imported lazily, in `cluster`, `pool`
and the Ray side of `folding` only). Modules, one concept each: `protocol` (the typed records workers
send the writer), `writer` (the one memory writer), `proxy` (the `Memory` protocol by proxy to it),
`worker` (an episode worker), `cluster` (connecting to Ray, starting actors and tasks), `pool` (the
driver's worker slots), `roster` (their status), `jobs` (what the driver hands out), `coordinator`
(the distributed daemon's driver), `folding` (folds as Ray tasks), `run` (the daemon process),
`evaluation` (the harness over workers).
"""
