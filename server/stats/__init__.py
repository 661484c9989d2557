"""Job figures: the live per-user `job-stats` (`live`), the admin aggregates and their check
against the jobs table (`aggregates`), and the processing-time histogram behind p95
(`histogram`). All read the aggregates kept by the job store, never a scan of `jobs`."""
