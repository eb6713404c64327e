from __future__ import annotations

import pytest

from tether.manifest.kitignore import IgnoreRules


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        (["*.log"], "train.log", True),
        (["*.log"], "logs/train.log", False),  # '*' stays within one component
        (["**/*.log"], "logs/deep/train.log", True),
        (["**/*.log"], "train.log", True),
        (["logs"], "logs/a/b.txt", True),  # a matched directory takes its contents
        (["logs/**"], "logs/a/b.txt", True),
        (["data/*.csv", "!data/keep.csv"], "data/keep.csv", False),
        (["data/*.csv", "!data/keep.csv"], "data/drop.csv", True),
        (["!data/keep.csv", "data/*.csv"], "data/keep.csv", True),  # last match wins
        (["file?.txt"], "file1.txt", True),
        (["file?.txt"], "file10.txt", False),
        (["[ab].txt"], "a.txt", True),
        (["[!ab].txt"], "a.txt", False),
        (["/abs/path"], "abs/path", True),
        (["# comment", ""], "# comment", False),
        (["\\#literal"], "#literal", True),
        ([], "data-v2/x", False),
    ],
)
def test_dockerignore_semantics(patterns: list[str], path: str, ignored: bool) -> None:
    assert IgnoreRules(patterns).ignored(path) is ignored


def test_os_junk_and_own_files_are_always_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = IgnoreRules.for_context(tmp_path)
    for path in (
        ".DS_Store",
        "sub/Thumbs.db",
        "Kitfile",
        ".kitignore",
        ".tether/store/x",
        ".git/config",
    ):
        assert rules.ignored(path), path
    assert not rules.ignored("src/main.py")
