"""Socket.IO: the namespace with its connection checks, rooms and handlers (`namespace`), the
per-node delivery of job-update events (`fanout`), an admin socket's filter of them (`admin_feed`),
job alerts (`alerts`), and the one place that replaces a python-engineio method (`engineio_compat`).

The rest of the server uses `namespace.Realtime` (built in the lifespan) and, to emit events,
the small `emitter.Emitter` interface it implements.
"""
