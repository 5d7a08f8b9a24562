"""The insight memory of a run: `store.MemoryStore` is the face callers use.

Parts, one concern each, all on one `session.Session` (connection, lock, transactions):
`insights` (add, merge, edit, admit, retire), `credit` (credit, per-task stats, baselines), `recall`
(search and CORE retrieval, scored by `retrieval`), `attempts`, `episodes` (with per-episode
`summaries`), `history` (versions, diff, rollback; export/import in `transfer`, states in `versions`)
and `indexes` (the in-memory vector indexes over `index.VectorIndex`, exact or HNSW by size, saved
by `index_file`, faiss threads and GPUs in `faisslib`; fed by `vectors`). Underneath: `db` (rows and
the write transaction), `schema` (tables and their version), `records`, `embed`, `errors`; `chains`
is the fold's chain buffer.
"""
