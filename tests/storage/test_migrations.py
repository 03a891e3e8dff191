"""Schema migrations (storage/migrate.py) on SQLite and on a real PostgreSQL.

Every database, whatever it was made by, ends at the head revision with exactly the schema
of storage/schema.py, or start-up is refused with one line that names the difference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from openkeyvault.storage import migrate
from openkeyvault.storage.db import _sqlite_engine
from openkeyvault.storage.errors import StartupRefused
from openkeyvault.storage.schema import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/okv.db"
    return str(request.getfixturevalue("pg_url"))


def open_engine(url: str) -> Engine:
    """For SQLite, the engine db.py writes through (its transactions are BEGIN IMMEDIATE
    on an autocommit connection, so DDL is transactional as on PostgreSQL)."""
    if url.startswith("sqlite:///"):
        return _sqlite_engine(url[len("sqlite:///"):], immediate=True)
    return create_engine(url)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    e = open_engine(url)
    yield e
    e.dispose()


def run_sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def upgrade_to(engine: Engine, revision: str) -> None:
    """The database as an older release of the migrations left it."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(migrate.config(conn), revision)


def made_before_migrations(engine: Engine) -> None:
    """A database as release 0.1 made it: its schema (the baseline), no alembic_version."""
    upgrade_to(engine, migrate.BASELINE)
    run_sql(engine, "DROP TABLE alembic_version",
            "INSERT INTO meta (key, value) VALUES ('tenant_id', 'kept')")


def state(engine: Engine) -> tuple[str | None, list[object]]:
    with engine.connect() as conn:
        return migrate.current_revision(conn), migrate.differences(conn)


def test_revisions_are_alembics_own_linear_history() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.config())
    assert scripts.get_heads() == [migrate.head()]
    walked = [s.revision for s in scripts.walk_revisions("base", "heads")][::-1]
    assert tuple(walked) == migrate.revisions()
    assert walked[0] == migrate.BASELINE
    assert [int(r) for r in walked] == list(range(1, len(walked) + 1))
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")


def test_the_next_revision_is_generated_from_schema_py(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m openkeyvault.storage.migrate revision MESSAGE` (on a copy of the scripts):
    numbered after the head, revising it; with schema.py unchanged it has nothing to do."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS", scripts)
    monkeypatch.setattr(migrate, "VERSIONS", scripts / "versions")
    migrate.revisions.cache_clear()
    try:
        before = migrate.head()
        written = migrate.new_revision("nothing changes")
        following = f"{int(before) + 1:04d}"
        assert written.name == f"{following}_nothing_changes.py"
        assert migrate.head() == following
        text_ = written.read_text()
        assert f"down_revision = {before!r}" in text_
        assert "op." not in text_.split("def upgrade")[1].split("def downgrade")[0]
    finally:
        migrate.revisions.cache_clear()


def test_an_empty_database_gets_every_revision(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert state(engine) == (migrate.head(), [])
    assert set(inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}
    migrate.upgrade(engine)  # again: nothing to do
    assert state(engine) == (migrate.head(), [])


def test_a_database_made_before_migrations_is_adopted(engine: Engine) -> None:
    made_before_migrations(engine)
    migrate.upgrade(engine)
    assert state(engine) == (migrate.head(), [])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key = 'tenant_id'")).scalar() \
            == "kept"


def test_tables_an_older_release_lacked_are_created_on_adoption(engine: Engine) -> None:
    made_before_migrations(engine)
    run_sql(engine, "DROP TABLE resource_groups")  # releases before it had none
    migrate.upgrade(engine)
    assert state(engine) == (migrate.head(), [])


def test_an_older_revision_is_upgraded(engine: Engine) -> None:
    upgrade_to(engine, migrate.BASELINE)
    migrate.upgrade(engine)
    assert state(engine) == (migrate.head(), [])


def test_a_revision_from_a_newer_release_is_refused(engine: Engine) -> None:
    migrate.upgrade(engine)
    run_sql(engine, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StartupRefused, match="revision 9999, which this version does not know"
                       ) as refused:
        migrate.upgrade(engine)
    assert "\n" not in str(refused.value)
    assert state(engine)[0] == "9999"


def test_a_schema_that_differs_is_refused_in_one_line(engine: Engine) -> None:
    migrate.upgrade(engine)
    run_sql(engine, "ALTER TABLE meta ADD COLUMN extra TEXT", "DROP TABLE resource_groups")
    with pytest.raises(migrate.SchemaMismatch) as refused:
        migrate.upgrade(engine)
    message = str(refused.value)
    assert "\n" not in message
    assert "column meta.extra unexpected" in message
    assert "table resource_groups missing" in message
    assert "needs a migration revision" in message


def test_an_upgrade_is_checked_in_full(engine: Engine) -> None:
    """After an upgrade even what the light check at the head does not look at (indexes)
    must match."""
    made_before_migrations(engine)
    run_sql(engine, "DROP INDEX ix_objects_purge")
    with pytest.raises(migrate.SchemaMismatch, match="index ix_objects_purge on objects missing"):
        migrate.upgrade(engine)
    # Refused as a whole: the transaction was rolled back, nothing recorded.
    assert state(engine)[0] is None


def test_another_applications_tables_are_left_alone(engine: Engine) -> None:
    run_sql(engine, "CREATE TABLE other_app (id INTEGER PRIMARY KEY)")
    migrate.upgrade(engine)
    assert state(engine) == (migrate.head(), [])
    assert "other_app" in inspect(engine).get_table_names()


OPEN_ONE = """
import sys
from pathlib import Path
from sqlalchemy import create_engine
from openkeyvault.storage import migrate
from openkeyvault.storage.db import _sqlite_engine
from openkeyvault.storage.db import open_sqlite
url = sys.argv[1]
if url.startswith("sqlite:///"):
    open_sqlite(Path(url[len("sqlite:///"):])).dispose()
else:
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
"""


def test_processes_starting_together_migrate_once(url: str) -> None:
    """Worker processes open the database at the same moment: one migrates, the others
    wait for it and find the head."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).touch(mode=0o600)
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_ONE, url], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    engine = open_engine(url)
    try:
        assert state(engine) == (migrate.head(), [])
    finally:
        engine.dispose()


# ---- SQLite on a read-only file system ---------------------------------------------------


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """`path` (a new tmpfs holding what is in it now) remounted read-only, then unmounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    saved = path.with_name(path.name + ".saved")
    path.rename(saved)
    path.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        shutil.copytree(saved, path, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_read_only_disk_at_the_head_opens_without_writing(tmp_path: Path) -> None:
    from openkeyvault.storage.db import open_sqlite

    data = tmp_path / "data"
    data.mkdir()
    open_sqlite(data / "okv.db").dispose()
    with read_only_dir(data):
        before = files(data)
        engines = open_sqlite(data / "okv.db")
        engines.dispose()
        assert files(data) == before


def test_read_only_disk_needing_an_upgrade_is_refused_in_one_line(tmp_path: Path) -> None:
    from openkeyvault.storage.db import open_sqlite

    data = tmp_path / "data"
    data.mkdir()
    engine = open_engine(f"sqlite:///{data}/okv.db")
    made_before_migrations(engine)
    engine.dispose()
    with read_only_dir(data):
        before = files(data)
        with pytest.raises(StartupRefused, match="file system is read-only") as refused:
            open_sqlite(data / "okv.db")
        assert "\n" not in str(refused.value)
        assert files(data) == before


def test_read_only_disk_with_this_schema_unrecorded_opens(tmp_path: Path) -> None:
    """Made before migrations, yet already this version's schema: nothing to change, so it
    is served (the revision is recorded at the first start on a writable disk)."""
    from openkeyvault.storage.db import open_sqlite

    data = tmp_path / "data"
    data.mkdir()
    open_sqlite(data / "okv.db").dispose()
    engine = open_engine(f"sqlite:///{data}/okv.db")
    run_sql(engine, "DROP TABLE alembic_version")
    engine.dispose()
    with read_only_dir(data):
        before = files(data)
        open_sqlite(data / "okv.db").dispose()
        assert files(data) == before
