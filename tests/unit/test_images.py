"""Image references, documents and the layer format, without a registry (tests/images has the
registry tests)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from reconciler.images import ImageError, content, layout, reference
from reconciler.images.content import Descriptor
from reconciler.images.store import Store

OBJ = Path(__file__).resolve().parents[2] / "manifests/examples/bytecode/xdp_counter.o"
HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        (
            "quay.io/bpfman-bytecode/go-xdp-counter:latest",
            "quay.io",
            "bpfman-bytecode/go-xdp-counter",
            "latest",
            None,
        ),
        ("quay.io/org/prog", "quay.io", "org/prog", "latest", None),
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("org/prog:v1", "docker.io", "org/prog", "v1", None),
        ("localhost/prog:1.0", "localhost", "prog", "1.0", None),
        ("127.0.0.1:5000/a/b/c:t_1", "127.0.0.1:5000", "a/b/c", "t_1", None),
        (f"reg:5000/prog@sha256:{HEX}", "reg:5000", "prog", None, f"sha256:{HEX}"),
        (f"reg.io/prog:v2@sha256:{HEX}", "reg.io", "prog", "v2", f"sha256:{HEX}"),
        ("[::1]:5000/prog:v1", "[::1]:5000", "prog", "v1", None),
    ],
)
def test_references_parse_as_container_tools_read_them(text, registry, repository, tag, digest):
    ref = reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        (" quay.io/x", "spaces"),
        ("quay.io/Org/x", "lowercase"),
        ("quay.io/x:-bad", "tag"),
        ("quay.io/x@sha256:abc", "64 lowercase hex"),
        ("quay.io/x@md5:" + HEX, "sha256"),
        ("quay.io//x", "repository"),
        ("quay.io/x/", "repository"),
        ("quay.io/" + "a" * 300, "255"),
        ("bad_host:99/x", "registry host"),
        ("localhost:99999/x", "between 1 and 65535"),
        ("127.0.0.1:0/x", "between 1 and 65535"),
    ],
)
def test_a_wrong_reference_says_which_part_is_wrong(text, says):
    with pytest.raises(ImageError) as e:
        reference.parse(text)
    assert says in str(e.value)


def _manifest(**over) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": content.OCI_MANIFEST,
        "config": {"mediaType": content.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": 10},
        "layers": [{"mediaType": content.OCI_LAYER_GZIP, "digest": f"sha256:{HEX}", "size": 5}],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_documents_of_unexpected_types_or_shapes_are_refused():
    assert isinstance(
        content.parse_document(_manifest(), content.OCI_MANIFEST, "x"), content.Manifest
    )
    cases = [
        (_manifest(), "text/html", "not an image manifest"),
        (_manifest(), content.DOCKER_MANIFEST, "served as"),
        (b"{", content.OCI_MANIFEST, "not JSON"),
        (_manifest(schemaVersion=1), content.OCI_MANIFEST, "schemaVersion"),
        (
            _manifest(
                layers=[{"mediaType": "application/x-evil", "digest": f"sha256:{HEX}", "size": 1}]
            ),
            content.OCI_MANIFEST,
            "layer media type",
        ),
        (
            _manifest(config={"mediaType": content.OCI_CONFIG, "digest": "sha256:zz", "size": 1}),
            content.OCI_MANIFEST,
            "config digest",
        ),
        (
            _manifest(
                config={"mediaType": content.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": -1}
            ),
            content.OCI_MANIFEST,
            "size",
        ),
    ]
    for data, media_type, says in cases:
        with pytest.raises(ImageError) as e:
            content.parse_document(data, media_type, "reg/x:v1")
        assert says in str(e.value) and "reg/x:v1" in str(e.value)


def test_a_blob_must_match_its_digest_and_size():
    data = b"hello"
    good = Descriptor(content.OCI_LAYER_GZIP, content.digest_of(data), 5)
    content.check_blob(data, good, "x")
    with pytest.raises(ImageError, match="bytes"):
        content.check_blob(data + b"!", good, "x")
    with pytest.raises(ImageError, match="does not match its digest"):
        content.check_blob(b"HELLO", good, "x")


def _tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, data, kind) with kind file, dir or symlink, gzip'd."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
    return gzip.compress(out.getvalue())


def test_the_object_is_taken_from_the_root_of_the_layer_and_nothing_else():
    elf = OBJ.read_bytes()
    layer = _tar(
        [
            ("./", None, "dir"),
            ("sub/other.o", elf, "file"),
            ("link.o", None, "symlink"),
            ("README", b"text", "file"),
            ("./prog.o", elf, "file"),
        ]
    )
    assert layout.extract_object(layer, content.OCI_LAYER_GZIP, {}, "x") == elf
    layout.check_object(elf, "x")


def test_a_layer_with_no_or_several_objects_is_refused():
    elf = OBJ.read_bytes()
    with pytest.raises(ImageError, match="has 0"):
        layout.extract_object(_tar([("a.txt", b"x", "file")]), content.OCI_LAYER_GZIP, {}, "x")
    two = _tar([("a.o", elf, "file"), ("b.o", elf, "file")])
    with pytest.raises(ImageError, match=r"has 2 \(a.o, b.o\)"):
        layout.extract_object(two, content.OCI_LAYER_GZIP, {}, "x")
    # The older format names its file.
    assert layout.extract_object(two, content.OCI_LAYER_GZIP, {"io.ebpf.filename": "b.o"}, "x")
    with pytest.raises(ImageError, match="not a valid tar"):
        layout.extract_object(b"garbage", content.OCI_LAYER_GZIP, {}, "x")


def test_a_layer_that_unpacks_past_the_bound_is_refused(monkeypatch):
    monkeypatch.setattr(layout, "MAX_UNPACKED", 1 << 20)
    bomb = _tar([("zeros.o", b"\0" * (2 << 20), "file")])
    assert len(bomb) < 10_000
    with pytest.raises(ImageError, match="unpacks to over"):
        layout.extract_object(bomb, content.OCI_LAYER_GZIP, {}, "x")


def test_objects_for_another_byte_order_or_machine_are_refused():
    elf = bytearray(OBJ.read_bytes())
    big = bytearray(elf)
    big[5] = 2  # what clang -target bpfeb writes: the header's fields big-endian too
    big[18:20] = (247).to_bytes(2, "big")
    with pytest.raises(ImageError, match="big-endian and this host is little-endian"):
        layout.check_object(bytes(big), "x")
    x86 = bytearray(elf)
    x86[18:20] = (62).to_bytes(2, "little")
    with pytest.raises(ImageError, match="not eBPF"):
        layout.check_object(bytes(x86), "x")
    with pytest.raises(ImageError, match="not an ELF"):
        layout.check_object(b"#!/bin/sh\n" * 10, "x")


def test_labels_are_json_maps_of_names():
    assert layout.programs_and_maps(
        {"io.ebpf.programs": '{"a":"xdp"}', "io.ebpf.maps": '{"m":"hash"}'}, "x"
    ) == ({"a": "xdp"}, {"m": "hash"})
    assert layout.programs_and_maps(
        {"io.ebpf.program_name": "a", "io.ebpf.program_type": "tc"}, "x"
    ) == ({"a": "tc"}, {})
    with pytest.raises(ImageError, match="not a bpfman bytecode image"):
        layout.programs_and_maps({}, "x")
    with pytest.raises(ImageError, match="JSON object"):
        layout.programs_and_maps({"io.ebpf.programs": '["a"]'}, "x")


def test_the_index_entry_for_this_host_is_chosen_or_the_choice_named():
    entries = tuple(
        Descriptor(content.OCI_MANIFEST, f"sha256:{c * 64}", 1, plat)
        for c, plat in (("1", "linux/arm64"), ("2", "linux/amd64"), ("3", "linux/s390x"))
    )
    index = content.Index(content.OCI_INDEX, entries)
    assert layout.choose(index, "x", "linux/amd64").platform == "linux/amd64"
    with pytest.raises(ImageError, match="linux/ppc64le.*linux/amd64, linux/arm64, linux/s390x"):
        layout.choose(index, "x", "linux/ppc64le")


def test_built_layers_are_reproducible_and_read_back():
    elf = OBJ.read_bytes()
    a, diff_a = layout.build_layer("prog.o", elf)
    b, diff_b = layout.build_layer("prog.o", elf)
    assert (a, diff_a) == (b, diff_b)
    assert layout.extract_object(a, content.OCI_LAYER_GZIP, {}, "x") == elf


def test_the_store_keeps_only_checked_blobs_and_drops_damaged_ones(tmp_path):
    store = Store(tmp_path)
    data = b"blob"
    digest = content.digest_of(data)
    assert store.read(digest, 100) is None
    store.put(data, digest)
    assert store.read(digest, 100) == data
    store.blob_path(digest).write_bytes(b"blub")  # damaged on disk
    assert store.read(digest, 100) is None and not store.has(digest)
    store.put(data, digest)
    store.remember("reg/x:v1", digest)
    assert store.resolved("reg/x:v1") == digest and store.resolved("reg/x:v2") is None
    assert store.prune({digest}) == []
    assert store.prune(set()) == [digest]
    assert store.resolved("reg/x:v1") is None
    assert not list((tmp_path / "tmp").iterdir())


# --- manifests naming images: expansion against a stub host (tests/images runs the real one)


def _image_answer(obj: Path, digest: str = "sha256:" + "1" * 64) -> dict:
    return {
        "object": str(obj),
        "digest": digest,
        "platform": "linux/amd64",
        "programs": {"xdp_stats": "xdp"},
    }


def test_an_image_manifest_expands_to_its_object_with_the_resolved_digest(tmp_path):
    from reconciler.spec import load_desired
    from tests.unit.spec_support import StubHost, bpf_object, write_tree, xdp

    url = "quay.io/bpfman-bytecode/xdp:v1"
    text = xdp(bytecode=f"{{image: {{url: '{url}', imagepullpolicy: Always}}}}")
    root = write_tree(tmp_path, {"x.yaml": text})
    host = StubHost(images={url: _image_answer(bpf_object())})
    (d,) = load_desired(root, host).attachments
    assert d.program.object_path == str(bpf_object())
    assert d.attributes["bytecode"] == url
    assert d.attributes["image_digest"] == "sha256:" + "1" * 64
    assert ("bytecode_image", url, "Always", None) in host.asked


def test_an_image_is_checked_as_a_path_is_and_against_its_labels(tmp_path):
    from reconciler.spec import ManifestError, load_desired
    from reconciler.spec.host import HostError
    from tests.unit.spec_support import StubHost, bpf_object, write_tree, xdp

    url = "quay.io/bpfman-bytecode/xdp:v1"
    text = xdp(bytecode=f"{{image: {{url: '{url}'}}}}")
    cases = [
        (_image_answer(bpf_object()) | {"programs": {"other": "xdp"}}, "labels of " + url),
        (HostError(f"{url}: not found on quay.io"), "spec.bytecode.image.url: " + url),
    ]
    for i, (answer, says) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        root = write_tree(tmp_path / str(i), {"x.yaml": text})
        with pytest.raises(ManifestError) as e:
            load_desired(root, StubHost(images={url: answer}))
        assert any(says in p for p in map(str, e.value.problems)), e.value.problems
    wrong = xdp(bytecode=f"{{image: {{url: '{url}'}}}}").replace("xdp_stats", "nope")
    (tmp_path / "fn").mkdir()
    root = write_tree(tmp_path / "fn", {"x.yaml": wrong})
    with pytest.raises(ManifestError) as e:
        load_desired(root, StubHost(images={url: _image_answer(bpf_object())}))
    assert any(f"function 'nope' is not in {url}" in str(p) for p in e.value.problems)


def test_an_image_whose_labels_give_the_function_another_type_is_refused(tmp_path):
    from reconciler.spec import ManifestError, load_desired
    from tests.unit.spec_support import StubHost, bpf_object, write_tree, xdp

    url = "quay.io/bpfman-bytecode/xdp:v1"
    text = xdp(bytecode=f"{{image: {{url: '{url}'}}}}")
    answer = _image_answer(bpf_object()) | {"programs": {"xdp_stats": "tc"}}
    root = write_tree(tmp_path, {"x.yaml": text})
    with pytest.raises(ManifestError) as e:
        load_desired(root, StubHost(images={url: answer}))
    assert any(
        f"the labels of {url} say 'xdp_stats' is a tc program" in str(p) for p in e.value.problems
    )
    ok = _image_answer(bpf_object()) | {"programs": {"xdp_stats": "XDP"}}
    assert load_desired(root, StubHost(images={url: ok})).attachments


def test_a_hostile_signature_manifest_is_an_error_not_a_crash():
    from reconciler.images import signing

    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ImageError, match="not JSON"):
        signing.parse_signatures(deep, "reg/x:v1's signature")
    assert signing.payload_problem(deep, reference.parse("reg.io/x:v1"), "sha256:" + HEX)


def test_keyless_identities_match_issuer_and_the_whole_subject():
    from reconciler.images.keyless import Identity, Signer

    ci = Signer("https://token.example", ("https://github.com/o/r/.github/w.yml@refs/tags/v1",))
    assert Identity("https://token.example", subject=ci.subjects[0]).accepts(ci)
    assert not Identity("https://other.example", subject=ci.subjects[0]).accepts(ci)
    assert Identity("https://token.example", subject_regexp=r"https://github\.com/o/.*").accepts(ci)
    # Anchored at both ends: a pattern matching part of the subject is not enough.
    assert not Identity("https://token.example", subject_regexp="github").accepts(ci)
    assert not Identity("https://token.example", subject_regexp=r".*/r/").accepts(ci)


@pytest.mark.parametrize(
    "index",
    [b"", b"[]", b"{", b'{"manifests": 3}', b"[" * 100000, b'{"manifests": [1, "x", null]}'],
)
def test_hostile_referrer_lists_are_refused_or_empty_never_a_crash(index):
    from reconciler.images import keyless

    with contextlib.suppress(ImageError):
        assert keyless.bundle_manifests(index, "r") == []


def test_only_sigstore_bundles_about_this_image_are_taken_from_referrers():
    from reconciler.images import keyless

    bundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
    digest, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    entry = {"mediaType": content.OCI_MANIFEST, "digest": other, "size": 10}
    index = {"manifests": [{**entry, "artifactType": bundle}, {**entry, "artifactType": "sbom"},
                           {**entry, "artifactType": bundle, "size": 1 << 40}]}  # fmt: skip
    assert [d.digest for d in keyless.bundle_manifests(json.dumps(index).encode(), "r")] == [other]
    layer = {"mediaType": bundle, "digest": other, "size": 100}
    manifest = {"subject": {"digest": digest}, "layers": [layer]}
    assert keyless.bundle_layer(json.dumps(manifest).encode(), digest, "r").digest == other
    assert keyless.bundle_layer(json.dumps(manifest).encode(), other, "r") is None
    big = {**manifest, "layers": [{**layer, "size": keyless.MAX_BUNDLE + 1}]}
    assert keyless.bundle_layer(json.dumps(big).encode(), digest, "r") is None


def test_a_bundle_that_is_not_one_is_an_error_not_a_crash(tmp_path):
    from reconciler.images import keyless

    root = keyless.trusted_root(None)  # Sigstore's public-good root, as shipped
    for junk in (b"", b"{}", b"[" * 100000, b'{"mediaType": 1}', b"\xff\xfe"):
        with pytest.raises(ImageError, match="does not verify"):
            keyless.verify(junk, "sha256:" + "a" * 64, root)


# go-securesystemslib's published vector (its encrypted package's tests): the format of cosign's
# key files, "reallyimportant" sealed under the password "supersecret".
SSL_VECTOR = (
    b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiL'
    b'R4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA'
    b'/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}'
)


def _cosign_pem(doc: bytes) -> bytes:
    import base64

    kind = b"ENCRYPTED SIGSTORE PRIVATE KEY"
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, base64.b64encode(doc), kind)


def test_cosign_key_files_open_as_cosign_seals_them():
    from reconciler.images import signing

    kind = b"ENCRYPTED SIGSTORE PRIVATE KEY"
    pem = _cosign_pem(SSL_VECTOR)
    assert signing._cosign_decrypt(pem, kind, b"supersecret") == b"reallyimportant"
    with pytest.raises(ImageError, match="password does not open"):
        signing._cosign_decrypt(pem, kind, b"wrong")
    with pytest.raises(ImageError, match="--password-file or COSIGN_PASSWORD"):
        signing._cosign_decrypt(pem, kind, None)
    hostile = SSL_VECTOR.replace(b'"N":32768', b'"N":1099511627776')
    with pytest.raises(ImageError, match="unsupported scrypt parameters"):
        signing._cosign_decrypt(_cosign_pem(hostile), kind, b"supersecret")
    for junk in (b"{", b"[]", b'{"kdf": 1}', b"[" * 100000):
        with pytest.raises(ImageError, match="damaged"):
            signing._cosign_decrypt(_cosign_pem(junk), kind, b"x")


def test_labels_fit_a_kind_by_family_as_sections_do():
    """upstream's TCX images are built from classifier/... sections; a tc label is a TC
    classifier as much as tcx is, and kprobe or uprobe labels fit both probe kinds."""
    from reconciler.kinds import sections

    assert sections.label_family("tc") == sections.label_family("TCX") == "sched_cls"
    assert sections.label_family("uretprobe") == sections.label_family("kprobe") == "kprobe"
    assert sections.label_family("cgroup_skb") is None
    assert [sections.label_type(s) for s in ("classifier/tcx_stats", "tcx/ingress", "xdp",
            "uretprobe/x", "kprobe/x", "tracepoint/a", "my_section", "raw_tp/x")] == [
        "tc", "tcx", "xdp", "uprobe", "kprobe", "tracepoint", None, None]  # fmt: skip


def test_a_tcx_program_labelled_tc_is_loaded_and_one_labelled_xdp_is_not(tmp_path):
    from reconciler.spec import ManifestError, load_desired
    from tests.unit.spec_support import StubHost, bpf_object, write_tree

    url = "quay.io/bpfman-bytecode/go-tcx-counter:latest"
    text = f"""
apiVersion: bpfman.io/v1alpha1
kind: TcxProgram
metadata: {{name: tcx}}
spec:
  bpffunctionname: tcx_ingress
  bytecode: {{image: {{url: '{url}'}}}}
  interfaceselector: {{interfaces: [eth0]}}
  direction: ingress
  priority: 5
"""
    root = write_tree(tmp_path, {"t.yaml": text})
    answer = _image_answer(bpf_object()) | {"programs": {"tcx_ingress": "tc"}}
    assert load_desired(root, StubHost(images={url: answer})).attachments
    answer = _image_answer(bpf_object()) | {"programs": {"tcx_ingress": "xdp"}}
    with pytest.raises(ManifestError, match="say 'tcx_ingress' is a xdp program"):
        load_desired(root, StubHost(images={url: answer}))
