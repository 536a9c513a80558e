"""The store tests' empty, migrated database (SQLite and PostgreSQL: the db_url fixture); a
test module with rows of its own defines its own `engine`."""

from __future__ import annotations

import pytest

from collector.store.db import create_db_engine, migrate


@pytest.fixture
def engine(db_url):
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()
