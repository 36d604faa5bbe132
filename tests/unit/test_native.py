"""The click encoder compiled with mypyc (tools/build_native.py) writes exactly what its Python source
writes, and compiled modules built from other sources are refused."""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from aiokafka.codec import zstd_encode
from aiokafka.record.util import calc_crc32c

from clickwire import avrobin, native, recordbatch
from services.redirector import rawclick
from tests.unit.redirector.test_app_rawclick import CAPTURED, CODEC, TRUSTED


def _source(module: ModuleType, name: str) -> ModuleType:
    """`module` executed from its .py file (as plain Python, whatever is installed in its place)."""
    path = native.ROOT / next(s for s in native.SOURCES if s.endswith(f"/{module.__name__.rsplit('.', 1)[1]}.py"))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_the_encoder_is_compiled_where_there_is_a_c_compiler() -> None:
    """`make setup` compiled it on this machine (a failed build would silently cost throughput)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    assert native.compiled() == (shutil.which(compiler) is not None)


def test_compiled_and_source_encoders_write_the_same_bytes() -> None:
    source = _source(rawclick, "rawclick_source")
    assert str(source.__file__).endswith(".py")
    ours, theirs = rawclick.Finisher("host-1", TRUSTED, CODEC.header), source.Finisher("host-1", TRUSTED, CODEC.header)
    for captured in CAPTURED * 2:
        assert ours.encode(captured) == theirs.encode(captured)
        assert ours(captured) == theirs(captured)
        assert rawclick.encode(CODEC.header, ours(captured)) == source.encode(CODEC.header, theirs(captured))


def test_compiled_and_source_record_batches_are_the_same_bytes() -> None:
    source = _source(recordbatch, "recordbatch_source")
    assert str(source.__file__).endswith(".py")
    built = []
    for module in (recordbatch, source):
        writer = module.RecordBatcher(lambda key: key[0] % 2, 3000, module.ZSTD, zstd_encode, calc_crc32c)
        for i in range(400):
            writer.add(bytes([i % 5]), b"value %d " % i * (i % 9), 1_790_000_000_000 + i % 70)
        built.append([(p, b._build()) for p, b in writer.batches()])
    assert built[0] == built[1]
    assert len(built[0]) > 2


def test_compiled_and_source_avro_primitives_agree() -> None:
    source = _source(avrobin, "avrobin_source")
    for n in [0, 1, -1, 63, 64, -65, 300, 4095, 4096, -4096, 8191, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]:
        assert avrobin.varint(n) == source.varint(n)
        encoded = avrobin.varint(n)
        assert avrobin.read_long(encoded, 0) == source.read_long(encoded, 0) == (n, len(encoded))
    for text in ["", "a", "é" * 40, "x" * 200]:
        assert avrobin.string(text) == source.string(text)
        assert avrobin.optional_string(text) == source.optional_string(text)
    assert avrobin.optional_string(None) == source.optional_string(None)
    for bad in ["1", 2**63, 1.5, True]:
        with pytest.raises(avrobin.Unsupported):
            avrobin.checked_long(bad)
        with pytest.raises(source.Unsupported):
            source.checked_long(bad)


def _tree(root: Path) -> None:
    for source in native.SOURCES:
        (root / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(native.ROOT / source, root / source)


def test_check_refuses_modules_compiled_from_other_sources(tmp_path: Path) -> None:
    _tree(tmp_path)
    native.check(tmp_path)  # nothing compiled: the sources run, nothing to check
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (tmp_path / native.SOURCES[1]).with_suffix(suffix).write_bytes(b"")
    with pytest.raises(ImportError, match="make setup"):
        native.check(tmp_path)  # compiled, no stamp
    (tmp_path / native.STAMP).write_text(native.digest(tmp_path) + "\n")
    native.check(tmp_path)
    assert native.built_modules(tmp_path) == [(tmp_path / native.SOURCES[1]).with_suffix(suffix)]
    with (tmp_path / native.SOURCES[0]).open("a") as f:
        f.write("\n# edited after the build\n")
    with pytest.raises(ImportError, match="make setup"):
        native.check(tmp_path)


def test_make_rebuilds_when_any_compiled_source_changes() -> None:
    """The Makefile's list of the compiled sources (what `make setup` watches) is clickwire.native's."""
    line = next(x for x in (native.ROOT / "Makefile").read_text().splitlines() if x.startswith("NATIVE_SOURCES :="))
    assert tuple(line.partition(":=")[2].partition("#")[0].split()) == native.SOURCES
