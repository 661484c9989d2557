"""A job's scope on its cluster: the app-status cache shared by every node (`cache`), and the
customer states and app status of exactly one job's customers, kept fresh for watching sockets
(`scope`).

The rest of the server uses `cache.AppStatusCache` and `scope.JobScope`; only `cache` touches the
appstatus_* and cache_counters tables.
"""
