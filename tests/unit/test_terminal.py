"""Nothing printed can rewrite the terminal: escaping, and only bpfman's own colours pass."""

from __future__ import annotations

import io

import pytest

from reconciler import terminal


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, café ✓\n", "plain text, café ✓\n"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("a\rb", "a\\x0db"),
        ("a\tb", "a\\x09b"),
        ("a\x7f\x9b", "a\\x7f\\x9b"),
        ("a\u202eb\u2066", "a\\u202eb\\u2066"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("line\u2028sep", "line\\u2028sep"),
        ("name-\udcff\udcfe", "name-\\xff\\xfe"),  # a file name that is not UTF-8
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert terminal.escape(text) == shown


def test_only_bpfmans_own_colours_pass_and_only_with_colour() -> None:
    out = io.StringIO()
    stream = terminal.SafeStream(out, colors=True)
    # Data that holds a well-formed colour code of the very kind bpfman uses.
    stream.write(terminal.paint("+", "32") + " eth\x1b[32m0 \x1b[8mhidden\n")
    assert out.getvalue() == "\x1b[32m+\x1b[0m eth\\x1b[32m0 \\x1b[8mhidden\n"
    plain = io.StringIO()
    terminal.SafeStream(plain, colors=False).write(terminal.paint("Error:", "31;1") + " x\x1b\n")
    assert plain.getvalue() == "Error: x\\x1b\n"


def test_a_stream_writes_what_it_is_given_escaped_and_counts_the_input() -> None:
    out = io.StringIO()
    stream = terminal.SafeStream(out)
    assert stream.write("a\x1bb") == 3
    stream.writelines(["c\r", "d\n"])
    assert out.getvalue() == "a\\x1bbc\\x0dd\n"
    assert stream.getvalue() == out.getvalue()  # everything else is the wrapped stream's
