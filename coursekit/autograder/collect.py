"""``coursekit collect``: turn learners' hand-in zips into submissions, through nbgrader's own collect step.

A hand-in (``coursekit handin`` on the learner's machine) is untrusted input. Each zip is read with limits
(size, number of files, names that stay inside their folder, no links), its manifest is checked (this course,
this assignment, a valid student id, every file's SHA-256), and only then are its files laid out as one entry of
nbgrader's exchange inbound folder (``<student>+<assignment>+<time>+<random>/`` with ``timestamp.txt``), in a
scratch exchange. ``nbgrader collect --update`` then copies the latest hand-in of each learner into
``submitted/<student>/<assignment>/``, exactly as it does for hand-ins sent with ``nbgrader submit``.

The time a hand-in records is the learner's clock; for deadlines, the time your LMS or mailbox received the
file is the one to trust.
"""

from __future__ import annotations

import json
import secrets
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coursekit.autograder.learner import HANDIN_FORMAT, HANDIN_MANIFEST
from coursekit.autograder.workspace import NAME, course_id_from_config

MAX_FILES = 500
MAX_BYTES = 200 * 2**20


@dataclass(frozen=True)
class Collected:
    source: str  # the zip's file name
    student: str  # "" when the hand-in could not be read
    status: str  # "collected", "older" (a later hand-in of this learner was kept) or "rejected"
    detail: str = ""


class HandinError(ValueError):
    """A hand-in that cannot be collected; the message says why, in words the learner can act on."""


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ":" in name or any(p in ("", "..", ".") for p in path.parts):
        raise HandinError(f"a file name that leaves its folder: {name!r}")
    return path


def read_handin(path: Path, course_id: str, assignment: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and files of one hand-in, checked; raises HandinError on anything out of place."""
    import hashlib

    from nbgrader.utils import parse_utc

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise HandinError(f"not a zip file ({err})") from err
    with archive:
        entries = [e for e in archive.infolist() if not e.is_dir()]
        if len(entries) > MAX_FILES:
            raise HandinError(f"{len(entries)} files; a hand-in may hold {MAX_FILES}")
        if sum(e.file_size for e in entries) > MAX_BYTES:
            raise HandinError(f"more than {MAX_BYTES // 2**20} MB unpacked")
        for entry in entries:
            _safe_name(entry.filename)
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise HandinError(f"a link: {entry.filename}")
        names = {e.filename for e in entries}
        if HANDIN_MANIFEST not in names:
            raise HandinError(f"no {HANDIN_MANIFEST}: make hand-ins with `coursekit handin`")
        try:
            manifest = json.loads(archive.read(HANDIN_MANIFEST))
            files = {str(k): str(v) for k, v in dict(manifest["files"]).items()}
            student, timestamp = str(manifest["student"]), str(manifest["timestamp"])
            parse_utc(timestamp)
            if manifest.get("format") != HANDIN_FORMAT:
                raise HandinError(f"hand-in format {manifest.get('format')!r}; this coursekit reads {HANDIN_FORMAT}")
        except HandinError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as err:
            raise HandinError(f"a damaged {HANDIN_MANIFEST} ({type(err).__name__})") from err
        if manifest.get("assignment") != assignment:
            raise HandinError(f"a hand-in of '{manifest.get('assignment')}', not of '{assignment}'")
        if course_id and manifest.get("course_id") not in ("", course_id):
            raise HandinError(f"a hand-in for the course '{manifest.get('course_id')}', not '{course_id}'")
        if not NAME.match(student):
            raise HandinError(f"'{student}' is not a valid student id")
        content = {}
        for name in sorted(names - {HANDIN_MANIFEST}):
            path_in_zip = _safe_name(name)
            if path_in_zip.parts[0] != assignment:
                raise HandinError(f"a file outside {assignment}/: {name}")
            relative = PurePosixPath(*path_in_zip.parts[1:]).as_posix()
            data = archive.read(name)
            if files.get(relative) != hashlib.sha256(data).hexdigest():
                raise HandinError(f"{relative} does not match its checksum: the file was damaged or changed "
                                  "after packing; ask the learner to hand in again")
            content[relative] = data
        missing = set(files) - set(content)
        if missing:
            raise HandinError(f"files listed but absent: {', '.join(sorted(missing))}")
    return manifest, content


def _inbound_entry(inbound: Path, manifest: dict, content: dict[str, bytes]) -> None:
    """Lay one hand-in out as nbgrader's ``nbgrader submit`` would have."""
    entry = inbound / f"{manifest['student']}+{manifest['assignment']}+{manifest['timestamp']}+{secrets.token_hex(6)}"
    for relative, data in content.items():
        target = entry / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (entry / "timestamp.txt").write_text(manifest["timestamp"])


def collect_handins(course_dir: Path, assignment: str, paths: list[Path]) -> list[Collected]:
    """Collect every hand-in zip in ``paths`` (files, or folders of them) into ``submitted/``."""
    from nbgrader.utils import parse_utc

    from coursekit.autograder.nbgrader_io import run_nbgrader

    course = Path(course_dir).resolve()
    config = course / "nbgrader_config.py"
    if not config.exists():
        raise FileNotFoundError(f"{course} has no nbgrader_config.py: run `coursekit collect` at the course's root")
    course_id = course_id_from_config(config)
    zips = sorted({z for p in map(Path, paths) for z in (p.glob("*.zip") if p.is_dir() else [p])})
    if not zips:
        raise FileNotFoundError(f"no hand-in zips in {', '.join(map(str, paths))}")
    results, accepted = [], []
    with tempfile.TemporaryDirectory(prefix="coursekit-exchange-") as exchange:
        inbound = Path(exchange) / course_id / "inbound"
        inbound.mkdir(parents=True)
        for path in zips:
            try:
                manifest, content = read_handin(path, course_id, assignment)
            except HandinError as err:
                results.append(Collected(path.name, "", "rejected", str(err)))
                continue
            _inbound_entry(inbound, manifest, content)
            accepted.append((path.name, manifest))
        if accepted:
            run_nbgrader(course, "collect", assignment, "--update", f"--Exchange.root={exchange}",
                         f"--CourseDirectory.course_id={course_id}", "--ExchangeCollect.check_owner=False")
    for name, manifest in accepted:
        stamp = course / "submitted" / manifest["student"] / assignment / "timestamp.txt"
        kept = parse_utc(stamp.read_text().strip()) if stamp.exists() else None
        if kept == parse_utc(manifest["timestamp"]):
            results.append(Collected(name, manifest["student"], "collected", manifest["timestamp"]))
        else:
            results.append(Collected(name, manifest["student"], "older",
                                     f"{manifest['timestamp']}; the hand-in of {kept} is kept"))
    return sorted(results, key=lambda r: (r.status != "collected", r.student, r.source))


def format_collected(results: list[Collected]) -> str:
    lines = []
    for r in results:
        who = r.student or "?"
        lines.append(f"  {r.status:<9} {who:<16} {r.source}  {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("collected", "older", "rejected")}
    lines.append(f"{counts['collected']} collected, {counts['older']} older hand-ins skipped, "
                 f"{counts['rejected']} rejected")
    return "\n".join(lines)
