"""Fake run folders (docs/architecture.md format), a study built from them, and a real PostgreSQL server."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from annotate import db
from annotate.study import create_study
from bench.runfolder import fake_prompts, read_runs, write_fake_run
from ladd.cli import run_cli

MODEL_NAMES = ("shapes-turbo", "shapes-sd3", "shapes-lcm")  # must never reach the browser


@pytest.fixture
def run_dirs(tmp_path):
    prompts = fake_prompts(8)
    return [write_fake_run(tmp_path / "results" / "turbo1", "shapes-turbo", 1, prompts, samples=2, size=16,
                           sharpness=0.4),
            write_fake_run(tmp_path / "results" / "teacher50", "shapes-sd3", 50, prompts, samples=2, size=16),
            write_fake_run(tmp_path / "results" / "lcm4", "shapes-lcm", 4, prompts, samples=2, size=16,
                           sharpness=0.7)]


@pytest.fixture
def study_db(tmp_path, run_dirs):
    """Two model pairs x 8 prompts x 2 views = 32 comparisons, in 4 batches of 8, each with 1 gold check."""
    path = tmp_path / "study.db"
    engine = db.make_engine(str(path), must_exist=False)
    model, *baselines = read_runs(run_dirs)
    create_study(engine, "test", model, baselines, "parti128", samples_per_prompt=2, views=2, batch_size=8,
                 gold_per_batch=1, seed=0)
    engine.dispose()
    return path


@pytest.fixture
def cli(capsys):
    """Run a command module as its console entry does (`ladd.cli.run_cli`); returns (exit code, stdout, stderr)."""

    def run(module, *argv):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(module.main, module.PROG, [str(a) for a in argv])
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err

    return run


# --- a real PostgreSQL server for the study's concurrency and assignment tests -----------------------------------

class PostgresServer:
    """A throwaway PostgreSQL cluster listening only on a Unix socket in its own folder."""

    def __init__(self, socket_dir: Path):
        self.socket_dir = socket_dir
        self.count = 0

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        self.count += 1
        name = f"study{self.count}"
        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}"


def postgres_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_server():
    """Start PostgreSQL for this test session (initdb + pg_ctl, as the `postgres` user when running as root), or
    skip saying why. Durability is off (fsync, synchronous_commit): the tests are about concurrency, not disks."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the postgres extra: pip install -e '.[postgres]' (psycopg)")
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql")
    run_as = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="study-pg-"))  # short: a Unix socket path has ~100 characters at most
    if run_as:
        os.chown(base, run_as["user"], run_as["group"])
    data = base / "data"

    def run(*command):
        return subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=base, capture_output=True, text=True,
                              timeout=120, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}, **run_as)

    init = run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
    options = (f"-k {base} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
               "-c max_connections=100")
    start = run("pg_ctl", "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "-t", "60", "start")
    if start.returncode != 0:
        log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else start.stderr
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {log.strip().splitlines()[-1:]}")
    try:
        yield PostgresServer(base)
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """An empty study database on each backend the concurrency tests run against: a SQLite path, or the URL of
    a fresh database on the session's PostgreSQL server (skipped, saying why, when it cannot run here)."""
    if request.param == "sqlite":
        return str(tmp_path / "study.db")
    return request.getfixturevalue("postgres_server").new_database()
