"""Pipeline jobs and deployments reported by CI/CD agents: the typed request bodies and the shape
of what clients get (`models`), the store with its checked transitions, counters and summary
(`store`), the timeout sweep of silent running jobs (`timeouts`), and the deploy-regression check
(`regressions`).

Only `store` touches the pipeline_jobs, deployments, pipeline_counts and live_services tables;
the rest of the server uses `store.PipelineStore` (built in the lifespan).
"""
