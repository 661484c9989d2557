"""The Set Actions an operator can run, and validation of the customer IDs they run on."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from server.errors import BadRequest, PayloadTooLarge
from server.parsing import is_int


@dataclass(frozen=True)
class Action:
    """One Set Action: its canonical name, the code the cluster knows it by, and its aliases."""

    name: str
    code: int
    aliases: tuple[str, ...]


ACTIONS: tuple[Action, ...] = (
    Action("Trans-Begin", 1, ("trans-begin", "tran-begin")),
    Action("PE-Enable", 2, ("pe-enable",)),
    Action("T-Enable", 3, ("t-enable",)),
    Action("PE-Finalize", 4, ("pe-finalize",)),
    Action("PE-Direct", 5, ("pe-direct",)),
)

_BY_ALIAS = {alias: action for action in ACTIONS for alias in action.aliases}
_BY_CODE = {action.code: action for action in ACTIONS}

CID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# Header cells naming the CID column (compared lower-cased). A first row without one is data:
# a header word not listed here that looks like a CID would be taken for a customer.
# web/js/format.js keeps the same list for the count it shows before sending.
CSV_CID_HEADERS = {"cid", "cids", "customer_id", "customer_ids", "customer", "customers", "customerid",
                   "customer id", "account", "accounts", "account_id", "accountid", "account id", "id"}


def resolve_action(raw: object) -> Action:
    """The action named (case-insensitively, aliases allowed) or by code; 400 listing valid ones."""
    action = None
    if isinstance(raw, str):
        action = _BY_ALIAS.get(raw.strip().lower())
    elif is_int(raw):
        action = _BY_CODE.get(raw)
    if action is None:
        shown = raw if isinstance(raw, (str, int)) and len(str(raw)) <= 64 else "(invalid)"
        raise BadRequest(
            f"Unknown action {shown!r}. Valid actions: " + ", ".join(a.name for a in ACTIONS),
            code="unknown_action",
            details={"valid_actions": [a.name for a in ACTIONS]},
        )
    return action


def validate_cids(raw: object, max_cids: int) -> list[str]:
    """Check a list of CIDs from JSON; return them trimmed and de-duplicated, in order."""
    if not isinstance(raw, list):
        raise BadRequest("'cids' must be a list of customer IDs", code="validation_error",
                         details={"field": "cids"})
    if len(raw) > max_cids:
        raise PayloadTooLarge(
            f"Too many customer IDs: {len(raw)} given, at most {max_cids} per Set Action",
            details={"field": "cids", "max": max_cids},
        )
    return _clean(raw, max_cids)


def _clean(values: list, max_cids: int) -> list[str]:
    cids: list[str] = []
    seen: set[str] = set()
    invalid: list[str] = []
    for value in values:
        if not isinstance(value, str):
            invalid.append(repr(value)[:40])
            continue
        cid = value.strip()
        if not CID_PATTERN.fullmatch(cid):
            invalid.append(cid[:40])
            continue
        if cid not in seen:
            seen.add(cid)
            cids.append(cid)
    if invalid:
        raise BadRequest(
            f"{len(invalid)} invalid customer ID(s), e.g. {invalid[0]!r}: a CID is 1-64 letters, "
            "digits or . _ : - starting with a letter or digit",
            code="validation_error",
            details={"field": "cids", "invalid": invalid[:20]},
        )
    if not cids:
        raise BadRequest("No customer IDs given", code="validation_error", details={"field": "cids"})
    if len(cids) > max_cids:
        raise PayloadTooLarge(f"Too many customer IDs: at most {max_cids} per Set Action",
                              details={"field": "cids", "max": max_cids})
    return cids


def parse_cid_text(text: str, max_cids: int) -> list[str]:
    """CIDs typed by hand: one per line or separated by commas, semicolons or spaces."""
    return _clean([part for part in re.split(r"[\s,;]+", text) if part], max_cids)


def parse_cid_csv(data: bytes, max_cids: int) -> list[str]:
    """CIDs from an uploaded CSV: the column headed cid/customer_id, else the first column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The CSV file is not UTF-8 text", code="validation_error",
                         details={"field": "file"}) from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise BadRequest("The CSV file has no customer IDs", code="validation_error",
                         details={"field": "file"})
    header = [cell.strip().lower() for cell in rows[0]]
    column = 0
    for index, name in enumerate(header):
        if name in CSV_CID_HEADERS:
            column = index
            rows = rows[1:]
            break
    values = [row[column] if column < len(row) else "" for row in rows]
    if len(values) > max_cids:
        raise PayloadTooLarge(f"Too many customer IDs in the CSV: at most {max_cids}",
                              details={"field": "file", "max": max_cids})
    return _clean(values, max_cids)
