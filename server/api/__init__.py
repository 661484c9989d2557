"""HTTP routes, one module per area; `routes()` lists them all for the app."""
