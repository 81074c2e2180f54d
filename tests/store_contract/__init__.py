"""The call-store contract: one suite run against every backend (SQLite and PostgreSQL).

Also the support the store test folders share: :mod:`.helpers` (replaying captures, opening stores),
:mod:`.fixtures` (the captured calls, a pytest plugin loaded by tests/conftest.py) and
:mod:`.backends` (each backend's store and database, as the contract's tests see them).
"""
