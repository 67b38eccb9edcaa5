"""Rewrite a wheel without the parts grading never loads, so it fits where space is counted.

    python scripts/slim_wheel.py WHEEL OUTDIR PREFIX [PREFIX ...]

Every file whose path inside the wheel starts with one of the PREFIXes is left out, and the
wheel's RECORD is rewritten to match, so pip installs the result as usual. Used to carry Ray
(without its Java jars, its dashboard's web client and its libraries for training, tuning,
serving and data) and nbgrader (without its bundled documentation) to a machine that has no
package index (scripts/ray_wheels.sh).
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def slim(wheel: Path, outdir: Path, prefixes) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    target = outdir / wheel.name
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        kept = []
        for info in src.infolist():
            if info.filename == record_name:
                continue
            if any(info.filename.startswith(p) for p in prefixes):
                dropped += 1
                continue
            dst.writestr(info, src.read(info.filename))
            kept.append(info.filename)
        # RECORD lines are "path,hash,size"; keep those of the files still in the wheel.
        lines = [line for line in src.read(record_name).decode().splitlines()
                 if line and line.split(",", 1)[0] in kept]
        lines.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(lines) + "\n")
    print(f"{wheel.name}: left out {dropped} files, {wheel.stat().st_size / 2**20:.1f} MiB -> "
          f"{target.stat().st_size / 2**20:.1f} MiB")
    return target


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    slim(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
