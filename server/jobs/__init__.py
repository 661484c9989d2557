"""Set Action jobs: the catalogue of Set Actions and CID validation (`catalogue`), the job store
with its events and aggregates (`store`), the keyset cursor codec (`cursors`), the runner that
sends batches to the cluster under a lease (`runner`), and pruning of old rows (`retention`).

Only `store` and `retention` touch the jobs, job_customers, job_events, event_counters,
job_counts and daily_stats tables (through the store's methods for everyone else).
"""
