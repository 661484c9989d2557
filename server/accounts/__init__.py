"""Who may do what: users, sessions, API tokens (`store`), request authentication (`auth`), and
the audit log (`audit`).

The rest of the server uses `store.Accounts`, `store.Principal`, `store.Scope`,
`auth.Authenticator` and `audit.AuditLog`; only these modules touch the users, sessions,
api_tokens and audit_log tables.
"""
