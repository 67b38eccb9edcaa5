"""Submissions downloaded from an LMS, as a zip, into the course's submitted/ folder.

Two shapes of zip are understood:

  Canvas ("Download Submissions"): flat files <lastfirst>_<userid>_<submissionid>_<original name>,
          with `late_` before the user id when handed in late;
  Moodle ("Download all submissions"): a folder per student, <Full Name>_<id>_assignsubmission_file_/
          holding the files they uploaded (older versions: the same prefix on flat file names).

Each student's notebook goes to submitted/<student>/<assignment>/<notebook>.ipynb, nbgrader's
layout, under a stable, filesystem-safe student id: `<lastfirst>-<userid>` for Canvas (the user
id is the same in every course assignment), the slug of the full name for Moodle (its number is
a participant id of one assignment, so it cannot tell the same student across assignments).

The zip is read entry by entry, never extracted: a file is written only to the path made from
the student id, so a name like `../x` or `/etc/x` inside the zip cannot write anywhere else (such
entries are reported and skipped). Nothing already in the course is overwritten unless asked
(`replace`), and a problem with one student's files refuses that student, not the class.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .scratch import ASSIGNMENTS, DONE_MARKER

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024   # a notebook larger than this is refused, not read
IMPORTS_DIR = "imports"                 # the course's folder of import reports

CANVAS = re.compile(r"^(?P<name>.+?)_(?:(?P<late>late)_)?(?P<id>\d+)_(?P<submission>\d+)_(?P<file>.+)$")
MOODLE = re.compile(r"(?:^|/)(?P<name>[^/]+?)_(?P<id>\d+)_assignsubmission_file_(?:/|(?P<file>[^/]+)$)")


NOT_A_NOTEBOOK = "not a notebook"
METADATA = "hidden or macOS metadata file"


class ImportRefused(Exception):
    """The whole import was refused before anything in the course changed."""


@dataclass
class Found:
    """A notebook in the zip and whose it is."""
    entry: zipfile.ZipInfo
    student: str            # the course's student id
    lms: str                # "Canvas" or "Moodle"
    who: str                # the name and number the LMS gave
    late: bool = False


@dataclass
class ImportReport:
    """What one import did, entry by entry, in words for the instructor."""
    course_root: Path
    assignment: str
    zip_path: Path
    imported: list = field(default_factory=list)    # (student, zip entry, note)
    skipped: list = field(default_factory=list)     # (student, reason): already in the course
    refused: list = field(default_factory=list)     # (student or entry, reason): not imported
    unmatched: list = field(default_factory=list)   # (zip entry, reason): not a student's notebook
    path: Path | None = None                        # where the report was written

    @property
    def complete(self) -> bool:
        """Every notebook in the zip is in the course (imported now or before): nothing refused,
        and nothing unmatched but files that are no notebooks."""
        return not self.refused and all(reason in (NOT_A_NOTEBOOK, METADATA) for _, reason in self.unmatched)

    def describe(self) -> str:
        lines = [f"import of {self.zip_path} as {self.assignment} into {self.course_root / 'submitted'}:",
                 f"  imported {len(self.imported)}, skipped {len(self.skipped)} (already there), "
                 f"refused {len(self.refused)}, unmatched entries {len(self.unmatched)}"]
        lines += [f"  imported  {s}: {e}" + (f" ({n})" if n else "") for s, e, n in self.imported]
        lines += [f"  skipped   {s}: {r}" for s, r in self.skipped]
        lines += [f"  REFUSED   {s}: {r}" for s, r in self.refused]
        lines += [f"  unmatched {e}: {r}" for e, r in self.unmatched]
        return "\n".join(lines)


def student_slug(text: str) -> str:
    """A filesystem-safe, stable id from a name: ASCII letters and digits in lower case, words
    joined by '-'; a name with no such letters gets a short hash of itself."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "student-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def unsafe_name(name: str) -> str:
    """Why a zip entry's name is unsafe to follow ("" when it is not): absolute, a drive, or '..'."""
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in parts:
        return "path leaves its folder ('..')"
    if "\x00" in name:
        return "NUL in name"
    return ""


def classify(info: zipfile.ZipInfo) -> Found | str:
    """Whose notebook this entry is, or why it is none."""
    name = info.filename
    if unsafe_name(name):
        return f"unsafe name, ignored: {unsafe_name(name)}"
    base = name.rsplit("/", 1)[-1]
    if name.startswith("__MACOSX/") or any(part.startswith(".") for part in name.split("/")):  # .ipynb_checkpoints
        return METADATA
    if not base.lower().endswith(".ipynb"):
        return NOT_A_NOTEBOOK
    moodle = MOODLE.search(name)
    if moodle:
        who = moodle["name"]
        return Found(info, student_slug(who), "Moodle", f"{who} (participant {moodle['id']})")
    canvas = CANVAS.match(base)
    if canvas:
        who = canvas["name"]
        return Found(info, f"{student_slug(who)}-{canvas['id']}", "Canvas", f"{who} (user {canvas['id']})",
                     late=bool(canvas["late"]))
    return "a notebook whose name matches neither Canvas's nor Moodle's pattern"


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    with zf.open(info) as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    return data


def import_zip(course_root: Path, zip_path: Path, assignment: str, replace: bool = False,
               write_report: bool = True) -> ImportReport:
    """Put each student's notebook of an LMS zip at submitted/<student>/<assignment>/<notebook>.ipynb.

    Raises ImportRefused, with nothing changed, for an unknown assignment, a file that is not a
    readable zip, or a zip holding no student's notebook. Otherwise every student is handled on
    their own: imported; skipped when the course already has their submission (unless
    `replace`: then it is replaced and its earlier grade is redone by the next grading run);
    refused with the reason (two notebooks, unreadable, too large). The report says which, and
    lists every entry of the zip that is not a student's notebook; it is also written to
    imports/<assignment>-<time>.txt in the course.
    """
    course_root, zip_path = Path(course_root).resolve(), Path(zip_path)
    if assignment not in ASSIGNMENTS:
        raise ImportRefused(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    if not zip_path.is_file():
        raise ImportRefused(f"no such file: {zip_path}")
    if not zipfile.is_zipfile(zip_path):
        raise ImportRefused(f"{zip_path} is not a zip file (an LMS's 'download all submissions' gives one)")
    notebook = f"{ASSIGNMENTS[assignment]}.ipynb"
    report = ImportReport(course_root, assignment, zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportRefused(f"{zip_path} cannot be read as a zip: {exc}") from exc
    with zf:
        by_student: dict[str, list[Found]] = {}
        for info in zf.infolist():
            if info.is_dir():
                continue
            found = classify(info)
            if isinstance(found, str):
                report.unmatched.append((info.filename, found))
            else:
                by_student.setdefault(found.student, []).append(found)
        if not by_student:
            listed = ", ".join(info.filename for info in zf.infolist()[:5]) or "nothing"
            raise ImportRefused(f"{zip_path} holds no student's notebook (.ipynb named as Canvas or Moodle "
                                f"names them); it holds {listed}")

        for student, founds in sorted(by_student.items()):
            who = {f.who for f in founds}
            if len(founds) > 1:
                what = (f"{len(who)} students share this name; import them by hand" if len(who) > 1
                        else "more than one notebook; put the one to grade at "
                             f"submitted/{student}/{assignment}/{notebook} by hand")
                report.refused.append((student, f"{what}: " + ", ".join(f.entry.filename for f in founds)))
                continue
            found = founds[0]
            folder = course_root / "submitted" / student / assignment
            if not folder.resolve().is_relative_to((course_root / "submitted").resolve()):
                report.refused.append((student, "the student id leads outside submitted/"))
                continue
            present = folder.is_dir() and any(folder.iterdir())
            if present and not replace:
                report.skipped.append((student, f"already has a submission in {folder}; kept it "
                                                 "(--replace to take the zip's)"))
                continue
            try:
                data = _read(zf, found.entry)
            except (ValueError, RuntimeError, zipfile.BadZipFile, OSError) as exc:
                report.refused.append((student, f"{found.entry.filename} cannot be read ({exc})"))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{notebook}.importing"
            partial.write_bytes(data)
            os.replace(partial, folder / notebook)
            notes = [f"{found.lms}: {found.who}"] + (["handed in late"] if found.late else [])
            if present:
                marker = course_root / "autograded" / student / assignment / DONE_MARKER
                marker.unlink(missing_ok=True)
                notes.append("replaced the earlier submission; the next `grade` grades it again")
            report.imported.append((student, found.entry.filename, "; ".join(notes)))

    if write_report:
        folder = course_root / IMPORTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        report.path = folder / f"{assignment}-{stamp}.txt"
        report.path.write_text(report.describe() + "\n")
    return report
