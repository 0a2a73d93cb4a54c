"""nbgrader's collect step, trusting only what a learner cannot forge.

In nbgrader's filesystem exchange a submission is a folder ``inbound/<student>+<assignment>+<timestamp>+<random>``
written by the learner's own process, with a ``timestamp.txt`` it wrote too. Both the name and the time are
the learner's word: anyone may submit as someone else (nbgrader only logs "cheating attempt?" and collects it,
and the latest one wins), and anyone may back-date a submission or rewrite its files after the deadline (they
own them). Two facts the learner cannot fake are the folder's owner and the files' change times (``ctime``,
which no user can set back). :class:`OwnerCheckedCollect` uses them:

- a submission whose folder is not owned by the student it names is refused, with an error in the log;
- a submission changed after the time it claims is dated by its last change instead, and the collected
  ``timestamp.txt`` says so, so nbgrader's late penalty sees the real time;
- a submission made by hand without nbgrader's ``submission_secret.txt`` gets one, so that it cannot stop
  ``nbgrader release_feedback`` for everyone after it.

The instructor's ``nbgrader collect`` uses it through ``c.ExchangeFactory.collect`` (set by the course hub).
"""

from __future__ import annotations

import datetime
import os
import pwd
import secrets

from nbgrader.exchange.default.collect import ExchangeCollect

# A submission's files are written after its timestamp is taken; a large one takes a while to copy.
GRACE = datetime.timedelta(minutes=5)


def _owner(path: str) -> str:
    try:
        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except KeyError:
        return f"uid {os.stat(path).st_uid}"


def last_change(path: str) -> datetime.datetime:
    """The latest ctime of the folder and everything in it, in UTC (no user can move a ctime back)."""
    latest = os.stat(path).st_ctime
    for folder, _, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            latest = max(latest, os.lstat(name).st_ctime)
    return datetime.datetime.fromtimestamp(latest, datetime.timezone.utc).replace(tzinfo=None)


class OwnerCheckedCollect(ExchangeCollect):
    def _path_to_record(self, path):
        record = super()._path_to_record(path)
        record["owner"] = _owner(path)
        if record["owner"] != record["username"]:
            self.log.error("Refused %s: it claims to be by %s but %s submitted it.",
                           record["filename"], record["username"], record["owner"])
        changed = last_change(path)
        if changed - record["timestamp"] > GRACE:
            record["claimed"] = record["timestamp"]
            record["timestamp"] = changed
        return record

    def _sort_by_timestamp(self, records):
        genuine = [r for r in records if r["owner"] == r["username"]]
        return super()._sort_by_timestamp(genuine or records)

    def copy_files(self):
        self.src_records = [r for r in self.src_records if r["owner"] == r["username"]]
        super().copy_files()
        for record in self.src_records:
            dest = self.coursedir.format_path(self.coursedir.submitted_directory, record["username"],
                                              self.coursedir.assignment_id)
            secret = os.path.join(dest, "submission_secret.txt")
            if os.path.isdir(dest) and not os.path.exists(secret):
                # Made by hand, not by `nbgrader submit`: without a secret `nbgrader release_feedback` would stop
                # at this submission and release nobody's feedback after it.
                self.log.warning("%s has no submission_secret.txt (not made by nbgrader submit): its author cannot "
                                 "fetch its feedback.", record["filename"])
                with open(secret, "w") as handle:
                    handle.write(secrets.token_hex(64))
            if "claimed" not in record:
                continue
            stamp = record["timestamp"].strftime("%Y-%m-%d %H:%M:%S.%f UTC")
            self.log.warning("%s claims it was submitted at %s but was last changed at %s: dated by the change.",
                             record["filename"], record["claimed"], stamp)
            with open(os.path.join(dest, "timestamp.txt"), "w") as handle:
                handle.write(stamp)
