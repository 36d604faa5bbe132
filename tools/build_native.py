"""Compile the click encoder with mypyc: clickwire/avrobin.py, clickwire/recordbatch.py and
services/redirector/rawclick.py (clickwire/native.py SOURCES).

The redirector finishes and Avro-encodes every click it publishes in Python (rawclick.Finisher.encode)
and writes the Kafka record batches that carry them (recordbatch.RecordBatcher). Compiled by mypyc, the
same source encodes a click in about 60% of the time (docs/performance.md), and most of what
publishing costs per request is this per-click work. The modules stay ordinary Python: without a C
compiler nothing is built and the source runs as it is, byte for byte the same.

The build runs in a scratch directory (so no project configuration gets in the way) and copies the
extension modules next to their sources, where Python imports them in place of the .py files. It
then records the sources' digest in clickwire/native.stamp; clickwire/native.py refuses to run
extension modules compiled from other sources (``make setup`` rebuilds them when a source changes).

    .venv/bin/python tools/build_native.py          # what `make setup` runs
    .venv/bin/python tools/build_native.py --clean  # back to pure Python
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _native() -> ModuleType:
    # Loaded by path: importing the clickwire package runs the very check that stale modules fail.
    spec = importlib.util.spec_from_file_location("clickwire_native", ROOT / "clickwire" / "native.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native = _native()
GROUP, SOURCES, STAMP = native.GROUP, native.SOURCES, native.STAMP

SETUP = """
from setuptools import setup
from mypyc.build import mypycify
setup(name="clickwire-native", ext_modules=mypycify({sources!r}, group_name={group!r}, opt_level="3"),
      script_args=["build_ext", "--inplace"])
"""


def clean() -> None:
    for path in native.built_modules(ROOT):
        path.unlink()
    (ROOT / STAMP).unlink(missing_ok=True)


def build() -> int:
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        print(f"==> no C compiler ({compiler}): the click encoder runs as plain Python (slower, same output)")
        return 0
    clean()
    with tempfile.TemporaryDirectory(prefix="clickwire-native-") as tmp:
        scratch = Path(tmp)
        for source in SOURCES:
            (scratch / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, scratch / source)
        for package in {p for s in SOURCES for p in Path(s).parents if p != Path(".")}:
            (scratch / package / "__init__.py").touch()
        (scratch / "setup.py").write_text(SETUP.format(sources=list(SOURCES), group=GROUP))
        done = subprocess.run([sys.executable, "setup.py"], cwd=scratch, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            print("==> compiling the click encoder failed (see above): it runs as plain Python")
            return 0
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = [p for p in scratch.rglob(f"*{suffix}") if "build" not in p.relative_to(scratch).parts]
        for path in built:
            shutil.copy2(path, ROOT / path.relative_to(scratch))
    (ROOT / STAMP).write_text(native.digest(ROOT) + "\n")
    print(f"==> compiled the click encoder with mypyc ({len(built)} extension modules)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    return build()


if __name__ == "__main__":
    raise SystemExit(main())
