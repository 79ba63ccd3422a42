"""The nightly job and review: the state folder, its lock, decisions, changes, ``reconcile``,
``review apply``, the final mapping export and the taxonomy crosswalk. Depends on :mod:`migrate.mapping`
and :mod:`migrate.core`."""
