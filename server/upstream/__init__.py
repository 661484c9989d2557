"""The TMS clusters the server talks to: the registry of configured clusters (`clusters`) and
the HTTP client of the upstream API (`client`)."""
