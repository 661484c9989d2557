"""The database: tables (`schema`), the connection (`engine`), and migrations.

The rest of the server imports `Db`, `migrate` and the errors from here; only stores import
`schema` (each table is read and written by its own store).
"""

from server.db.engine import INTEGRITY_ERRORS, DatabaseUnavailable, Db
from server.db.migrations import SCHEMA_VERSION, migrate

__all__ = ["INTEGRITY_ERRORS", "SCHEMA_VERSION", "DatabaseUnavailable", "Db", "migrate"]
