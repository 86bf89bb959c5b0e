"""What every command shares: usage errors and bad input as one line and exit 2, a full disk reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli, files_in

from prealign.errors import InputError, disk_full


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["no-such-command"], "error: prealign-data: No such command 'no-such-command'"),
        (["switch"], "error: prealign-data switch: Missing argument 'CORPUS...'"),
        (["extract-lexicon", "x.tsv", "--ratio", "3"], "error: prealign-data extract-lexicon: No such option"),
        (["train", "pretrain", "--shards", "s"], "error: prealign-data train pretrain: Missing option"),
        (["demo", "--pairs", "many"], "error: prealign-data demo: Invalid value for '--pairs'"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], start: str) -> None:
    result = cli(*args, code=2)
    assert result.stderr.startswith(start), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    assert "--help" in result.stderr  # says where to look


def test_help_and_version_exit_0() -> None:
    assert cli("--help").stdout.startswith("Usage: prealign-data [OPTIONS] COMMAND")
    assert cli("switch", "--help").stdout.startswith("Usage: prealign-data switch [OPTIONS] CORPUS...")
    assert cli("--version").stdout.startswith("prealign-data, version ")


def test_disk_full_is_found_through_wrapping_errors() -> None:
    try:
        try:
            raise OSError(28, "No space left on device", "/data/out.arrow")
        except OSError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as exc:
        assert disk_full(exc) == "/data/out.arrow: no space left on device"
    assert disk_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert disk_full(InputError("no such file", "x")) is None
    assert disk_full(OSError(13, "Permission denied")) is None


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(small_disk: Path) -> None:
    """A real 256 KiB tmpfs: the demo's corpus does not fit; the command says so in one line, exit 2."""
    result = cli("demo", "-o", small_disk / "demo", "--pairs", "20000", "--workers", "0", "-q", code=2)
    assert result.stderr.startswith("error: ") and "no space left on device" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert "demo.en-fr.tsv: no space left on device" in result.stderr  # names the file that did not fit
    assert files_in(small_disk) == []  # no partial corpus, no temporary file
