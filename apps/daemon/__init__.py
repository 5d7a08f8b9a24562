"""The long-running improvement daemon: inbox tasks and self-practice through the learning loop.

Modules, one concept each: `run` (the process: lock, signals, worker thread, `run_daemon`),
`service` (the `Daemon` state machine), `ledger` (inbox-task bookkeeping and commits), `inbox`
(the folders and moves), `episodes` (one episode under the spend windows), `guard` (the LM guard:
stop requests, retries), `health` (pauses for a failing backend), `windows` (spend caps),
`practice` (self-practice sampling), `report` and `status` (status.json, logs), `lock` (one daemon
per run dir), `state` (daemon.sqlite).
"""
