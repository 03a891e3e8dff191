"""`okv audit verify` and `okv audit query` on a dev deployment's data directory: the key
from its root key file, the checkpoints from its database, the trail made by
`open_audit` as the server's composition root makes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from openkeyvault.ops.audit import AUDIT_DIR, SUFFIX, open_audit
from tests.security.audit_support import BOB, T0, lines, outcome, write_lines
from tests.support.okvcli import run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("okv") / "data"
    settings = Settings(data_dir=data)
    d = Deployment.open(settings)
    try:
        trail = open_audit(settings, d.engines, None)
        assert trail.fail_closed is False  # a dev server's default
        for i in range(6):
            trail.observe(outcome(time=T0 + i, status=403 if i == 2 else 200,
                                  caller=BOB if i == 2 else outcome().caller,
                                  operation="KeySign" if i == 4 else "SecretGet"))
        trail.close()
    finally:
        d.close()
    yield data


def _stream(data: Path) -> Path:
    (path,) = sorted((data / AUDIT_DIR).glob(f"*{SUFFIX}"))
    return path


def test_verify_clean(data_dir: Path) -> None:
    done = run("audit", "verify", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert "1 stream file(s), 6 record(s): OK" in done.stdout
    assert done.stderr == ""  # a checkpoint was found: no note


def test_verify_names_the_edited_line(data_dir: Path, tmp_path: Path) -> None:
    path = _stream(data_dir)
    original = path.read_bytes()
    try:
        content = lines(path)
        content[2] = content[2].replace(b'"Forbidden"', b'"OK"')
        write_lines(path, content)
        done = run("audit", "verify", "--data-dir", str(data_dir))
        assert done.returncode == 1
        assert f"{path}, line 3, sequence 3: edited" in done.stdout
        write_lines(path, lines(path)[:4])
        done = run("audit", "verify", "--data-dir", str(data_dir))
        assert "line 5, sequence 5: truncated" in done.stdout
    finally:
        path.write_bytes(original)


def test_query_json_and_table(data_dir: Path) -> None:
    done = run("audit", "query", "--data-dir", str(data_dir), "--output", "json",
               "--result", "Failure")
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["properties"]["httpStatusCode"] == 403
    done = run("audit", "query", "--data-dir", str(data_dir), "--operation", "keysign",
               "--since", "2026-11-30T00:53:21Z")
    assert done.returncode == 0 and "KeySign" in done.stdout and "SecretGet" not in done.stdout
    done = run("audit", "query", "--data-dir", str(data_dir), "--caller", BOB.object_id,
               "--output", "json")
    assert len(json.loads(done.stdout)) == 1
    done = run("audit", "query", "--data-dir", str(data_dir), "--result", "maybe")
    assert done.returncode == 2 and "error:" in done.stderr


def test_verify_on_a_production_node_takes_the_key_from_the_unsealed_node(
        tmp_path: Path) -> None:
    """A Shamir deployment: the key comes through the node's control socket, only while
    the node is unsealed; the shares are never asked for."""
    from openkeyvault.config import load_config
    from openkeyvault.ops.nodectl import root_key_from, socket_path
    from openkeyvault.storage.db import open_database
    from tests.support.production import okv, production_node

    with production_node(tmp_path, {"type": "shamir", "shares": 3, "threshold": 2}) as (
            node, made):
        sealed = okv("audit", "verify", "--config", str(node.config))
        assert sealed.returncode == 2 and "no unsealed node answers" in sealed.stderr
        for share in made["shares"][:2]:
            node.operator("unseal", stdin=share + "\n")
        node.wait_health(200)
        settings = load_config(node.config)
        root = root_key_from(socket_path(settings))
        assert root is not None
        engines = open_database(settings.db_path)
        try:
            trail = open_audit(settings, engines, root)
            assert trail.fail_closed is True  # production's default
            for _ in range(3):
                trail.observe(outcome())
            trail.close()
        finally:
            engines.dispose()
        done = okv("audit", "verify", "--config", str(node.config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "record(s): OK" in done.stdout
