"""Per-node system metrics: what a node measures of its own process (`process`: CPU, memory,
event-loop lag), and the table every node reports them into and admins read them from
(`reports`: `NodeReporter`, behind `GET /admin/system`).

The rest of the server builds a `NodeReporter` (services.py) and reads `NodeReporter.nodes()`.
"""
