"""The manifest loader: encodings, duplicate keys, nesting bound -- what is accepted as well as
what is refused (the refusals through the real CLI are in tests/unit/cli/test_malformed_manifests.py)."""
import codecs

import pytest

from scheduler_min.manifest import (
    MAX_NESTING_DEPTH,
    ManifestError,
    decode_manifest,
    load_documents,
    models_from_yaml,
    pipelines_from_yaml,
)

PIPE = "kind: Pipeline\nmetadata: {name: p}\nspec:\n  steps:\n    - name: m\n"


@pytest.mark.parametrize("data", [
    PIPE.encode(),
    codecs.BOM_UTF8 + PIPE.encode(),
    PIPE.encode("utf-16"),      # with its byte-order mark, as YAML allows and kubectl reads
    PIPE.encode("utf-32"),
    codecs.BOM_UTF16_BE + PIPE.encode("utf-16-be"),
], ids=["utf8", "utf8-bom", "utf16-bom", "utf32-bom", "utf16-be-bom"])
def test_encodings_with_a_byte_order_mark_are_read(data):
    (p,) = pipelines_from_yaml(data, "f.yaml")
    assert p.name == "p" and [s.name for s in p.steps] == ["m"]


def test_undecodable_bytes_name_the_file_and_offset():
    with pytest.raises(ManifestError) as info:
        decode_manifest(b"kind: \xff\n", "x.yaml")
    assert str(info.value).startswith("x.yaml: not UTF-8 text: undecodable byte 0xff at offset 6")


def test_merge_keys_may_be_overridden_but_plain_keys_not():
    text = ("base: &b {size: 2, windowMs: 10}\n"
            "kind: Pipeline\nmetadata: {name: p}\n")
    assert load_documents(text + "x: {<<: *b, size: 3}\n")[0]["x"] == {"size": 3, "windowMs": 10}
    with pytest.raises(ManifestError, match="duplicate key 'size' in x \\(first at line 4, column 5\\)"):
        load_documents(text + "x: {size: 2, size: 3}\n")


def test_duplicate_keys_in_a_later_document_are_named_with_their_place():
    with pytest.raises(ManifestError) as info:
        pipelines_from_yaml(PIPE + "---\n" + PIPE.replace("    - name: m\n", "    - name: m\n      name: n\n"),
                            "two.yaml")
    assert str(info.value) == ("two.yaml: malformed YAML at line 12, column 7: duplicate key 'name' in "
                               "spec.steps[0] (first at line 11, column 7)")


def test_nesting_up_to_the_bound_is_fine():
    levels = MAX_NESTING_DEPTH - 1  # the top-level mapping is the first level
    doc = load_documents("a: " + "[" * levels + "]" * levels)[0]
    assert isinstance(doc["a"], list)
    with pytest.raises(ManifestError, match=f"nested more than {MAX_NESTING_DEPTH} levels deep"):
        load_documents("a: " + "[" * (levels + 1) + "]" * (levels + 1))


def test_error_messages_stay_on_one_line():
    with pytest.raises(ManifestError) as info:
        pipelines_from_yaml('kind: "Pipe\\nline"\n', "f.yaml")
    assert "\n" not in str(info.value) and "Pipe\\nline" in str(info.value)


def test_aliases_do_not_blow_up_error_messages():
    """A billion-laughs list where a string belongs is reported briefly, not expanded."""
    lines = ["    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "kind: Model\nmetadata:\n  name: m\n  labels:\n" + "\n".join(lines) + "\nspec: {requirements: [*a8]}\n"
    with pytest.raises(ManifestError) as info:
        models_from_yaml(text, "m.yaml")
    assert str(info.value).startswith("m.yaml: spec.requirements of m must be a list of strings, found [[")
    assert len(str(info.value)) < 300


def test_batch_input_that_is_not_utf8_is_one_error(tmp_path):
    from gateways.batch import BatchError, read_inputs

    f = tmp_path / "in.jsonl"
    f.write_bytes('{"inputs": []}\n'.encode("utf-16"))
    with pytest.raises(BatchError, match="not UTF-8 text"):
        list(read_inputs(str(f), "jsonl"))
