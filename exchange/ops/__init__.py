"""Running a server for years: schema status, the rollback guard, backups and checks.

These sit above ``storage`` (they open stores and blob directories) and
below the CLI; ``exchange serve`` uses the schema status and the rollback
guard at start-up, and the ``exchange server`` sub-commands use the rest.
"""
