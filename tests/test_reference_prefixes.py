"""``add_reference`` on a prefix (the W&B guide's): one reference per object under it, with
size, checksum/etag and version id, on moto's S3 server (with and without bucket
versioning) and on a local folder."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from support import MakeFile

from tracelet_core import ArtifactStore, IntegrityError, InvalidArtifactError, TraceletArtifact


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


@pytest.fixture
def bucket(s3_env: str) -> str:
    return s3_env.removeprefix("s3://").split("/", 1)[0]


def put(client: Any, bucket: str, objects: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Upload ``objects``; what S3 says about each (ETag, VersionId)."""
    return {key: client.put_object(Bucket=bucket, Key=key, Body=body) for key, body in objects.items()}


IMAGES = {"raw/images/cat.png": b"cat" * 10, "raw/images/dog.png": b"dog" * 20,
          "raw/images/sub/mouse.png": b"m", "raw/other.txt": b"not under the prefix"}


# -- S3 -------------------------------------------------------------------------------------
def test_s3_prefix_expands_to_its_objects(s3_endpoint: str, bucket: str, store: ArtifactStore,
                                          tmp_path: Path) -> None:
    client = s3_client(s3_endpoint)
    put(client, bucket, IMAGES)
    art = TraceletArtifact("images", "dataset").add_reference(f"s3://{bucket}/raw/images/",
                                                              description="labelled")
    refs = art.references
    assert [r.name for r in refs] == ["cat.png", "dog.png", "sub/mouse.png"]
    assert [r.uri for r in refs] == [f"s3://{bucket}/raw/images/{n}" for n in ("cat.png", "dog.png", "sub/mouse.png")]
    assert [r.size for r in refs] == [30, 60, 1]
    for ref in refs:
        etag = client.head_object(Bucket=bucket, Key=ref.uri.split("/", 3)[3])["ETag"].strip('"')
        assert ref.checksum == f"etag:{etag}"
        assert ref.version_id is None  # the bucket keeps no versions
        assert ref.description == "labelled"
    assert art.size_bytes == 91

    logged = store.log(art)
    assert [(r.name, r.size, r.checksum) for r in logged.references] == [(r.name, r.size, r.checksum) for r in refs]
    fetched = logged.download(tmp_path / "out", references=True)
    assert (fetched / "sub" / "mouse.png").read_bytes() == b"m"


def test_s3_prefix_under_a_name_and_a_single_object(s3_endpoint: str, bucket: str) -> None:
    put(s3_client(s3_endpoint), bucket, IMAGES)
    art = (TraceletArtifact("images", "dataset")
           .add_reference(f"s3://{bucket}/raw/images/", name="images")
           .add_reference(f"s3://{bucket}/raw/other.txt"))  # no trailing /: one object, as before
    assert [r.name for r in art.references] == ["images/cat.png", "images/dog.png", "images/sub/mouse.png",
                                                "other.txt"]
    assert art.references[-1].size == len(b"not under the prefix")


def test_versioned_bucket_records_each_objects_current_version(
        s3_endpoint: str, bucket: str, store: ArtifactStore) -> None:
    client = s3_client(s3_endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = put(client, bucket, {"raw/images/cat.png": b"old cat"})
    new = put(client, bucket, {"raw/images/cat.png": b"new cat!", "raw/images/dog.png": b"dog"})
    logged = store.log(TraceletArtifact("images", "dataset").add_reference(f"s3://{bucket}/raw/images/"))
    by_name = {r.name: r for r in logged.references}
    assert by_name["cat.png"].version_id == new["raw/images/cat.png"]["VersionId"]
    assert by_name["cat.png"].version_id != old["raw/images/cat.png"]["VersionId"]
    assert by_name["dog.png"].version_id == new["raw/images/dog.png"]["VersionId"]
    assert by_name["cat.png"].size == len(b"new cat!")
    assert store.get("images:v1").references == logged.references  # kept in the catalog

    single = TraceletArtifact("cat", "image").add_reference(f"s3://{bucket}/raw/images/cat.png")
    assert single.references[0].version_id == new["raw/images/cat.png"]["VersionId"]  # one object too

    put(client, bucket, {"raw/images/dog.png": b"another dog"})  # a new object version
    again = store.log(TraceletArtifact("images", "dataset").add_reference(f"s3://{bucket}/raw/images/"))
    assert again.version == "v2" and again.digest != logged.digest


def test_missing_s3_prefix_is_refused(s3_endpoint: str, bucket: str) -> None:
    art = TraceletArtifact("images", "dataset")
    with pytest.raises(InvalidArtifactError, match="no objects under"):
        art.add_reference(f"s3://{bucket}/nothing/here/")
    assert art.references == []


# -- local folders --------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["path", "file-uri"])
def test_local_folder_expands(make_file: MakeFile, store: ArtifactStore, tmp_path: Path, form: str) -> None:
    make_file("data/a.csv", "1,2\n")
    make_file("data/nested/b.csv", "3,4,5\n")
    folder = tmp_path / "files" / "data"
    uri = str(folder) if form == "path" else f"file://{folder}/"
    logged = store.log(TraceletArtifact("local", "dataset").add_reference(uri))
    assert [(r.name, r.size) for r in logged.references] == [("a.csv", 4), ("nested/b.csv", 6)]
    assert all(r.checksum and r.uri.startswith("file://") for r in logged.references)
    out = logged.download(tmp_path / "out", references=True)
    assert (out / "nested" / "b.csv").read_text() == "3,4,5\n"


def test_more_than_max_objects_is_refused_and_adds_nothing(make_file: MakeFile, tmp_path: Path) -> None:
    for index in range(5):
        make_file(f"many/{index}.txt", str(index))
    folder = tmp_path / "files" / "many"
    art = TraceletArtifact("many", "dataset")
    with pytest.raises(InvalidArtifactError, match="more than 4 objects"):
        art.add_reference(str(folder), max_objects=4)
    assert art.references == []
    assert len(art.add_reference(str(folder), max_objects=5).references) == 5
    assert inspect.signature(TraceletArtifact.add_reference).parameters["max_objects"].default == 10_000


def test_prefix_names_must_be_free(make_file: MakeFile, tmp_path: Path) -> None:
    make_file("data/a.csv", "1")
    make_file("data/b.csv", "2")
    folder = tmp_path / "files" / "data"
    art = TraceletArtifact("clash", "dataset").add_object({"x": 1}, "a.csv", serializer="yaml")
    art.add_reference("https://example.com/b.csv", name="b.csv")
    with pytest.raises(InvalidArtifactError, match="b.csv"):
        art.add_reference(str(folder))  # a.csv is free, b.csv is not: neither is added
    assert [r.name for r in art.references] == ["b.csv"]


@pytest.mark.parametrize(("call", "match"), [
    ({"size_bytes": 10}, "size_bytes does not apply"),
    ({"max_objects": 0}, "max_objects"),
], ids=["size", "max-objects"])
def test_bad_prefix_arguments(make_file: MakeFile, tmp_path: Path, call: dict[str, Any], match: str) -> None:
    make_file("data/a.csv", "1")
    with pytest.raises(InvalidArtifactError, match=match):
        TraceletArtifact("bad").add_reference(str(tmp_path / "files" / "data"), **call)


def test_empty_local_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArtifactError, match="no objects under"):
        TraceletArtifact("bad").add_reference(str(tmp_path / "empty"))


def test_download_fetches_the_object_version_recorded_not_the_current_one(
        s3_endpoint: str, bucket: str, store: ArtifactStore, tmp_path: Path) -> None:
    client = s3_client(s3_endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put(client, bucket, {"raw/labels.csv": b"id,label\n1,cat\n"})
    logged = store.log(TraceletArtifact("labels", "dataset").add_reference(f"s3://{bucket}/raw/labels.csv"))
    put(client, bucket, {"raw/labels.csv": b"id,label\n1,dog\n2,cat\n"})  # overwritten since

    fetched = logged.download(tmp_path / "out", references=True)
    assert (fetched / "labels.csv").read_bytes() == b"id,label\n1,cat\n"  # what was logged, not what is there now

    client.delete_object(Bucket=bucket, Key="raw/labels.csv", VersionId=logged.references[0].version_id)
    with pytest.raises(IntegrityError, match="no longer exists"):
        logged.download(tmp_path / "again", references=True)
