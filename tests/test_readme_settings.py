"""The README's configuration tables name exactly the `JOBMON_*` variables the code reads.

What the code reads is found from the code, not from a list kept here: `load_settings` and the
simulator's `knobs_from_env` run on an environment that records every name they look up, and
every other `JOBMON_*` name written in `server/` as a string of its own (`os.environ.get("JOBMON_X")`,
`PREFIX + "X"`) counts too. A setting added to the code without its README row, or a row left
for a setting that is gone, fails with the names missing on each side.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from server import config
from server.sim.cluster import knobs_from_env

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"^JOBMON_[A-Z0-9_]*[A-Z0-9]$")  # a whole variable name; "JOBMON_SIM_" is a prefix
# Settings fields that hold a family of variables rather than one
FAMILY_FIELDS = {"sim_env": "JOBMON_SIM_"}


class RecordingEnv(Mapping):
    """An environment that remembers every variable name looked up in it."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self.values

    def get(self, key, default=None):
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def names_read_at_run_time(tmp_path: Path) -> set[str]:
    env = RecordingEnv({"JOBMON_DATA_DIR": str(tmp_path), "JOBMON_SECRET_KEY": "a-long-test-secret-key-0123456789"})
    config.load_settings(env)
    knobs_from_env(env)
    return {name for name in env.asked if name.startswith(config.PREFIX)}


def names_written_in_server() -> set[str]:
    """`JOBMON_*` names in server/'s code: whole string constants, and PREFIX + "NAME"."""
    found: set[str] = set()
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value):
                found.add(node.value)
            elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
                  and isinstance(node.left, ast.Name) and node.left.id == "PREFIX"
                  and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
                if NAME.match(config.PREFIX + node.right.value):
                    found.add(config.PREFIX + node.right.value)
    return found


def readme_configuration_names() -> set[str]:
    """The names in the first column of the tables under the README's "## Configuration"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`(JOBMON_[A-Z0-9_]+\*?)`", first_cell))
    return names


def test_every_setting_the_code_reads_has_a_row_in_the_readme_and_every_row_a_setting(tmp_path):
    in_code = names_read_at_run_time(tmp_path) | names_written_in_server()
    in_readme = readme_configuration_names()
    # a family row (`JOBMON_SIM_*`) introduces its variables; each is listed by name too
    families = {name[:-1] for name in in_readme if name.endswith("*")}
    in_readme -= {family + "*" for family in families}
    missing_rows = sorted(in_code - in_readme)
    not_read = sorted(in_readme - in_code)
    assert not missing_rows and not not_read, (
        "README.md's configuration tables and the code disagree.\n"
        f"  read by the code, missing from the README's tables ({len(missing_rows)}): {', '.join(missing_rows)}\n"
        f"  in the README's tables, read nowhere in server/ ({len(not_read)}): {', '.join(not_read)}")
    assert families == set(FAMILY_FIELDS.values()), families


def test_the_recorded_names_cover_every_settings_field(tmp_path):
    """Each Settings field comes from the variable of its name (so the recording above sees them all)."""
    read = names_read_at_run_time(tmp_path)
    fields = {f.name for f in dataclasses.fields(config.Settings)} - set(FAMILY_FIELDS)
    unread = sorted(f for f in fields if config.PREFIX + f.upper() not in read)
    assert not unread, f"Settings fields not read from JOBMON_<FIELD>: {', '.join(unread)}"
    for field, prefix in FAMILY_FIELDS.items():
        assert any(name.startswith(prefix) for name in read), field
