import io
import tarfile

import pytest

from medfuse_hf.data import load_physionet2012
from medfuse_hf.data.cache import cache_root, cached_load

HEADER = "Time,Parameter,Value\n"
DESCRIPTORS = "00:00,RecordID,{id}\n00:00,Age,54\n00:00,Gender,0\n00:00,Height,-1\n00:00,ICUType,4\n00:00,Weight,-1\n"
RECORDS = {
    "132539": HEADER + DESCRIPTORS.format(id=132539) + (
        "00:07,HR,73\n"
        "00:07,Na,139\n"
        "00:37,HR,77\n"
        "00:37,HR,77\n"          # line 11: exact duplicate
        "00:20,Temp,36.6\n"      # line 12: out of order, kept
        "01:10,Lactate_x,2\n"    # line 13: unknown parameter
        "01:20,,\n"              # line 14: empty parameter, as in set-c
        "02:00,Glucose,high\n"   # line 15: non-numeric
        "49:30,HR,80\n"          # line 16: after the 48 h window
        "03:00,WBC,-1\n"         # line 17: -1 means missing
        "03:xx,WBC,9\n"          # line 18: unparseable time
        "04:00,MechVent\n"       # line 19: malformed
    ),
    "132540": HEADER + DESCRIPTORS.format(id=132540) + "10:00,GCS,15\n",
    "132541": HEADER + DESCRIPTORS.format(id=132541),  # descriptors only: skipped as in the release
    "132542": HEADER + DESCRIPTORS.format(id=132542) + "00:30,HR,90\n",  # no outcome row
}
OUTCOMES = ("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"
            "132539,6,1,5,-1,0\n132540,16,8,8,12,1\n132541,1,1,1,-1,0\n")


def write_release(folder, as_archive=True):
    if as_archive:
        with tarfile.open(folder / "set-a.tar.gz", "w:gz") as archive:
            for record_id, text in RECORDS.items():
                data = text.encode()
                info = tarfile.TarInfo(f"set-a/{record_id}.txt")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        (folder / "set-a").mkdir()
        for record_id, text in RECORDS.items():
            (folder / "set-a" / f"{record_id}.txt").write_text(text)
    (folder / "Outcomes-a.txt").write_text(OUTCOMES)


@pytest.fixture
def release(tmp_path):
    write_release(tmp_path)
    return tmp_path


def test_records_become_patients_with_canonical_events(release):
    dataset = load_physionet2012(release)
    assert dataset["record_id"] == [132539, 132540]
    first = dataset[0]
    assert first["feature"] == ["age", "gender", "icu_type", "heart_rate", "sodium", "temperature", "heart_rate"]
    assert first["time"] == pytest.approx([0, 0, 0, 7 / 60, 7 / 60, 20 / 60, 37 / 60])
    assert first["value"] == [54, 0, 4, 73, 139, 36.6, 77]
    assert ((first["age"], first["gender"], first["icu_type"], first["height"], first["weight"])
            == (54, 0, 4, None, None))
    assert (first["in_hospital_death"], first["saps_i"], first["survival"]) == (0, 6, None)
    assert dataset[1]["in_hospital_death"] == 1 and dataset[1]["set"] == "a"


def test_every_skip_is_counted_with_file_and_line(release):
    _, summary = load_physionet2012(release, return_summary=True)
    where = "set-a.tar.gz:set-a/132539.txt"
    expected = {
        "duplicate row": 11,
        "unknown parameter 'Lactate_x'": 13,
        "empty parameter": 14,
        "non-numeric value": 15,
        "time outside the 48 h window": 16,
        "unparseable time": 18,
        "malformed line": 19,
    }
    for reason, line in expected.items():
        assert summary.skipped_events[reason] == 1, reason
        assert summary.examples[reason] == [f"{where}:{line}"]
    assert summary.skipped_events["missing value (-1)"] == 9  # Height and Weight of 4 records, WBC once
    assert summary.notes["out of time order (kept, sorted)"] == 1
    assert summary.skipped_patients == {"no time series after the descriptors": 1, "no outcome in Outcomes file": 1}
    assert (summary.patients_read, summary.patients_kept) == (4, 2)
    assert "skipped 1 events: malformed line (e.g. set-a.tar.gz:set-a/132539.txt:19)" in str(summary)


def test_extracted_folders_load_like_archives(tmp_path, release):
    folder = tmp_path / "extracted"
    folder.mkdir()
    write_release(folder, as_archive=False)
    assert load_physionet2012(folder).to_dict() == load_physionet2012(release).to_dict()


def test_truncated_archive_is_an_error_naming_it(release):
    archive = release / "set-a.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"set-a.tar.gz: truncated or corrupt archive"):
        load_physionet2012(release)


def test_missing_sets_and_outcomes_are_named(release):
    with pytest.raises(FileNotFoundError, match="set-b"):
        load_physionet2012(release, sets=["b"])
    (release / "Outcomes-a.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Outcomes-a.txt: outcome file missing"):
        load_physionet2012(release)


def test_cached_load_parses_once_and_rebuilds_when_the_release_changes(release, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("cache")))
    builds = []

    def build():
        builds.append(True)
        return load_physionet2012(release, sets=["a"])

    first = cached_load("physionet2012", release, "set a", build)
    assert cached_load("physionet2012", release, "set a", build).to_list() == first.to_list()
    assert len(builds) == 1  # the second load came from the cache
    cached_load("physionet2012", release, "sets a and b", build)
    assert len(builds) == 2  # other loader options are another cache entry
    (release / "Outcomes-a.txt").write_text(OUTCOMES.replace("132540,16,8,8,12,1", "132540,16,8,8,12,0"))
    assert cached_load("physionet2012", release, "set a", build)["in_hospital_death"] == [0, 0]
    assert len(builds) == 3  # an edited release file is never served from a stale cache
    assert len(list(cache_root().glob("physionet2012-*"))) == 2  # the stale "set a" copy is gone, "sets a and b" kept
    store, linked = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("linked")
    write_release(store, as_archive=False)  # a release whose set folder is a link into a store elsewhere
    (linked / "set-a").symlink_to(store / "set-a", target_is_directory=True)
    (linked / "Outcomes-a.txt").symlink_to(store / "Outcomes-a.txt")


    def build_linked():
        builds.append(True)
        return load_physionet2012(linked, sets=["a"])

    cached_load("physionet2012", linked, "set a", build_linked)
    (store / "set-a" / "132540.txt").write_text(RECORDS["132540"].replace("GCS,15", "GCS,14"))  # behind the link
    assert cached_load("physionet2012", linked, "set a", build_linked)[1]["value"][-1] == 14.0
    assert len(builds) == 5  # an edit behind a linked folder is never served from a stale cache either


def test_a_clock_out_of_range_a_record_id_not_the_files_and_a_set_named_twice_are_caught(tmp_path):
    """"-00:30" lost its sign and "00:75" read as 1.25 h; a file whose RecordID line names another record took that
    record's label (and its id twice); `sets=["a", "set-a"]` read every stay twice."""
    (tmp_path / "set-a").mkdir()
    (tmp_path / "set-a" / "132539.txt").write_text(
        HEADER + DESCRIPTORS.format(id=132539) + "-00:30,HR,73\n00:75,HR,74\n01:00,HR,75\n")
    (tmp_path / "set-a" / "132540.txt").write_text(HEADER + DESCRIPTORS.format(id=132539) + "01:00,HR,90\n")
    (tmp_path / "Outcomes-a.txt").write_text(OUTCOMES)
    cohort, summary = load_physionet2012(tmp_path, sets=["a", "set-a"], return_summary=True)
    assert cohort["record_id"] == [132539]
    heart_rate = [time for name, time in zip(cohort[0]["feature"], cohort[0]["time"]) if name == "heart_rate"]
    assert heart_rate == [1.0] and summary.skipped_events["unparseable time"] == 2
    assert summary.skipped_patients["RecordID '132539' is not the file's"] == 1
    (tmp_path / "Outcomes-a.txt").write_text(OUTCOMES.replace("132539,6,1,", "132539,6,,"))  # a blank SOFA
    assert load_physionet2012(tmp_path, sets=["a"])[0]["sofa"] is None
