"""The admin views of every user's jobs: filtered, sorted, keyset-paged lists, details and CSV
export (`queries`), and the choice of index that keeps each list fast (`planner`, a pure function).

The API uses `queries.AdminQueries`, `queries.JobFilter` and `queries.SORTS`.
"""
