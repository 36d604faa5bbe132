"""Which modules may run compiled (tools/build_native.py builds them), and the check that they are current.

Python imports an extension module in place of the .py file next to it, so a compiled module built
from an older source would silently run old code. :func:`check` runs when the clickwire package is
imported: when compiled modules exist and their recorded digest is not that of today's sources, it
raises ImportError naming the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sysconfig
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
# Compiled together (rawclick and recordbatch call avrobin's functions natively); order matters to mypyc.
SOURCES: Final = ("clickwire/avrobin.py", "clickwire/recordbatch.py", "services/redirector/rawclick.py")
GROUP: Final = "clickwire.native_group"  # mypyc's shared library: clickwire/native_group__mypyc.*.so
STAMP: Final = "clickwire/native.stamp"


def digest(root: Path = ROOT) -> str:
    """SHA-256 over the compiled modules' sources."""
    h = hashlib.sha256()
    for source in SOURCES:
        h.update(source.encode() + b"\0" + (root / source).read_bytes())
    return h.hexdigest()


def built_modules(root: Path = ROOT) -> list[Path]:
    """The extension modules the build left in the source tree."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    paths = [root / source.removesuffix(".py") for source in SOURCES]
    paths.append(root / (GROUP.replace(".", "/") + "__mypyc"))
    return [p.with_name(p.name + suffix) for p in paths if p.with_name(p.name + suffix).exists()]


def compiled() -> bool:
    """True when the click encoder runs compiled (Python would import it from an extension module)."""
    spec = importlib.util.find_spec(SOURCES[-1].removesuffix(".py").replace("/", "."))
    return spec is not None and spec.origin is not None and spec.origin.endswith(sysconfig.get_config_var("EXT_SUFFIX"))


def check(root: Path = ROOT) -> None:
    """Raise ImportError when compiled modules exist that were not built from today's sources."""
    if not built_modules(root):
        return
    stamp = root / STAMP
    recorded = stamp.read_text().strip() if stamp.exists() else ""
    if recorded != digest(root):
        raise ImportError(
            f"the compiled click encoder was built from other sources than {', '.join(SOURCES)}: "
            "run `make setup` to rebuild it, or `.venv/bin/python tools/build_native.py --clean` to run plain Python"
        )
