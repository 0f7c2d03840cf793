"""Reading YAML without surprises: values as YAML 1.1 and 1.2 agree, or refused with both
readings; merges, tags and aliases; control characters; bounded cost."""

from __future__ import annotations

import datetime

import pytest
import yaml

from reconciler.spec.yamlread import (
    Refused,
    YamlError,
    check_printable,
    plain_scalar,
    read_documents,
)


def one(text: str, **kw):
    docs = list(read_documents(text, **kw))
    assert len(docs) == 1
    return docs[0]


def messages(text: str) -> list[str]:
    return [f"{p.line}: {p.message}" for p in one(text).problems]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("eth0", "eth0"),
        ("xdp_stats", "xdp_stats"),
        ("55", 55),
        ("-3", -3),
        ("0", 0),
        ("0x10", 16),  # hexadecimal: the same to YAML 1.1 and 1.2
        ("1.5", 1.5),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("y", "y"),  # YAML 1.1 lists y/n as booleans; PyYAML, go-yaml v3 and 1.2 do not
        ("n", "n"),
        ("/usr/lib/libc.so.6", "/usr/lib/libc.so.6"),
        ("a b", "a b"),
        (".inf", float("inf")),
    ],
)
def test_scalars_both_versions_read_alike_are_taken(text: str, value: object) -> None:
    got = plain_scalar(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "old", "new"),
    [
        ("1:20", "the integer 80", "the string '1:20'"),  # sexagesimal
        ("010", "the integer 8", "the integer 10"),  # octal with a leading zero
        ("08", "the string '08'", "the integer 8"),
        ("0o17", "the string '0o17'", "the integer 15"),
        ("1_000", "the integer 1000", "the string '1_000'"),
        ("0b101", "the integer 5", "the string '0b101'"),
        ("+0x10", "the integer 16", "the string '+0x10'"),
        ("yes", "the boolean true", "the string 'yes'"),
        ("Off", "the boolean false", "the string 'Off'"),
        ("on", "the boolean true", "the string 'on'"),
        ("1e3", "the string '1e3'", "the number 1000.0"),
        ("2001-12-14", "a date", "the string '2001-12-14'"),
        ("2001-12-14t21:59:43.10-05:00", "a timestamp", "the string"),
    ],
)
def test_scalars_the_versions_read_differently_are_refused_with_both_readings(
    text: str, old: str, new: str
) -> None:
    with pytest.raises(Refused) as info:
        plain_scalar(text)
    message = str(info.value)
    assert message.startswith(f"{text} is ambiguous: YAML 1.1 readers (Kubernetes, PyYAML) read ")
    assert old in message and new in message
    assert "quote it" in message or "plainly" in message


def test_quoted_scalars_are_strings_whatever_they_look_like() -> None:
    doc = one("a: 'on'\nb: \"1:20\"\nc: '010'\nd: \"2001-12-14\"\n")
    assert doc.data == {"a": "on", "b": "1:20", "c": "010", "d": "2001-12-14"}
    assert doc.problems == []


def test_an_ambiguous_key_is_refused_where_it_is() -> None:
    assert messages("spec:\n  on: 1\n") == [
        "2: on is ambiguous: YAML 1.1 readers (Kubernetes, PyYAML) read the boolean true, YAML "
        "1.2 reads the string 'on'; quote it ('on') if you mean the text, or write true"
    ]


def test_pyyaml_would_have_changed_these_values_silently() -> None:
    """What this module exists for: the same text through PyYAML's safe loader."""
    text = "priority: 1:20\nmode: 010\non: x\nsince: 2001-12-14\n"
    assert yaml.safe_load(text) == {
        "priority": 80,
        "mode": 8,
        True: "x",
        "since": datetime.date(2001, 12, 14),
    }
    assert len(one(text).problems) == 4


def test_core_tags_convert_and_others_are_refused() -> None:
    doc = one("a: !!str 10\nb: !!int '10'\nc: !!float 1\nd: !!bool 'true'\ne: !!null ''\n")
    assert doc.data == {"a": "10", "b": 10, "c": 1.0, "d": True, "e": None}
    assert messages(
        "a: !!binary aGk=\nb: !!set {x}\nc: !local x\nd: !!python/name:os.system\n"
    ) == [
        "1: the tag !!binary is not supported; bpfman reads plain YAML values only (strings, "
        "numbers, true/false, null, lists and mappings): remove the tag",
        "2: the tag !!set is not supported; bpfman reads plain YAML values only (strings, "
        "numbers, true/false, null, lists and mappings): remove the tag",
        "3: the tag !local is not supported; bpfman reads plain YAML values only (strings, "
        "numbers, true/false, null, lists and mappings): remove the tag",
        "4: the tag !!python/name:os.system is not supported; bpfman reads plain YAML values "
        "only (strings, numbers, true/false, null, lists and mappings): remove the tag",
    ]
    assert messages("a: !!int x\n") == [
        "1: !!int 'x' is not a valid int; remove the tag or fix the value"
    ]


def test_a_number_too_long_for_any_field_is_refused_not_a_crash() -> None:
    assert messages("a: " + "9" * 5000 + "\n") == [
        "1: a number of 5000 digits is longer than any field takes (at most 100); quote it if "
        "it is text"
    ]


def test_merges_keep_own_keys_first_source_and_lines() -> None:
    text = (
        "a: &a {x: 1, y: 2}\n"  # 1
        "b: &b {y: 3, z: 4}\n"  # 2
        "c:\n"  # 3
        "  <<: [*a, *b]\n"  # 4
        "  x: 9\n"  # 5
    )
    doc = one(text)
    assert doc.problems == []
    assert doc.data["c"] == {"x": 9, "y": 2, "z": 4}
    assert doc.lines[("c", "x")] == 5  # its own key wins
    assert doc.lines[("c", "y")] == 1  # from the first source, where it was written
    assert doc.lines[("c", "z")] == 2


def test_merged_nested_fields_keep_their_lines() -> None:
    text = "base: &base\n  bytecode:\n    path: x.o\nspec:\n  <<: *base\n  priority: 1\n"
    doc = one(text)
    assert doc.data["spec"] == {"bytecode": {"path": "x.o"}, "priority": 1}
    assert doc.lines[("spec", "bytecode", "path")] == 3


def test_two_merge_keys_in_one_mapping_are_refused() -> None:
    assert messages("a: &a {x: 1}\nb: &b {y: 1}\nc:\n  <<: *a\n  <<: *b\n") == [
        "5: a second << merge key in one mapping (the first is at line 4); YAML would keep only "
        "the last, so merge several mappings with one key: <<: [*first, *second]"
    ]


def test_merging_something_that_is_not_a_mapping_is_refused() -> None:
    assert "<< must be followed by a mapping" in messages("a: &a [1]\nb:\n  <<: *a\n")[0]


def test_duplicate_keys_are_refused() -> None:
    assert messages("a: 1\nb: 2\na: 3\n") == [
        "3: duplicate key 'a' (first set at line 1); YAML would silently keep only the last "
        "value, so remove one of them"
    ]


def test_aliases_are_copies() -> None:
    """Defaults filled in at one place must not appear at the other."""
    doc = one("a: &a {x: 1}\nb: *a\n")
    doc.data["a"]["filled"] = True
    assert doc.data["b"] == {"x": 1}


def test_keys_must_be_plain_values() -> None:
    assert messages("? [a]\n: 1\n") == [
        "1: a mapping key must be a plain value (a string or number), not a list"
    ]
    assert messages("a: &a {x: 1}\n*a : 2\n") == ["2: a mapping key must be a plain value"]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("fw\x1b[2J", "U+001B (escape)"),
        ("a\rb", "U+000D (carriage return)"),
        ("a\nb", "U+000A (line feed)"),
        ("a\tb", "U+0009 (tab)"),
        ("a\x7f", "U+007F (delete)"),
        ("a\x85", "U+0085 (next line)"),
        ("a\x9b2J", "U+009B (a C1 control)"),
        ("a\u202eb", "U+202E (a bidirectional text control)"),
        ("a\u2066b", "U+2066 (a bidirectional text control)"),
        ("a\u200fb", "U+200F (right-to-left mark)"),
        ("a\u2028b", "U+2028 (line separator)"),
        ("a\ud800", "U+D800 (a lone surrogate)"),
        ("\x00", "U+0000 (a C0 control)"),
    ],
)
def test_control_characters_are_refused_in_every_string(value: str, name: str) -> None:
    why = check_printable(value)
    assert why is not None and why.startswith(f"contains the control character {name}")


def test_printable_text_passes_and_breaks_only_where_allowed() -> None:
    assert check_printable("café – naïve ✓ 日本") is None
    assert check_printable("line one\nline two\ttab", allow_breaks=True) is None
    assert check_printable("a\x1b", allow_breaks=True) is not None
    text = 'metadata:\n  annotations: {note: "one\\ntwo"}\n  name: "fw\\n"\n'
    doc = one(text, allow_breaks=lambda path: path[:2] == ("metadata", "annotations"))
    assert [(p.path, p.line) for p in doc.problems] == [(("metadata", "name"), 3)]


def test_escapes_in_double_quotes_are_caught_in_keys_and_values() -> None:
    assert [p.path for p in one('"k\\e": "v\\u202e"\n').problems] == [(), ("k\x1b",)]


def test_lines_of_every_key_and_item() -> None:
    doc = one("spec:\n  names:\n    - a\n    - b\n  n: 1\n")
    assert doc.lines == {
        ("spec",): 1,
        ("spec", "names"): 2,
        ("spec", "names", 0): 3,
        ("spec", "names", 1): 4,
        ("spec", "n"): 5,
    }


def test_values_are_bounded_per_text() -> None:
    with pytest.raises(YamlError) as info:
        list(read_documents("a: [" + ",".join(["0"] * 200) + "]\n", max_nodes=100))
    assert info.value.line == 1 and "more than 100 values" in info.value.message


def test_alias_expansion_is_bounded_and_counts_nested_aliases() -> None:
    text = (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    )
    with pytest.raises(YamlError) as info:
        list(read_documents(text, max_expansion=1000))
    assert info.value.line == 3 and "billion laughs" in info.value.message
    assert len(one(text).data["c"]) == 10  # within the default bound it is read


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(YamlError) as info:
        list(read_documents("a: &a\n  b: *a\n"))
    assert "refers to a value that contains it" in info.value.message


def test_nesting_is_bounded_without_recursion() -> None:
    with pytest.raises(YamlError) as info:
        list(read_documents("a: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert "nesting depth" in info.value.message
    deep = "".join("  " * i + f"k{i}:\n" for i in range(900)) + "  " * 900 + "x\n"
    assert one(deep).data is not None


def test_documents_before_a_syntax_error_are_kept() -> None:
    docs = []
    with pytest.raises(YamlError) as info:
        for doc in read_documents("a: 1\n---\nb: [\n"):
            docs.append(doc)
    assert [d.data for d in docs] == [{"a": 1}]
    assert info.value.line == 4 or info.value.line == 3
