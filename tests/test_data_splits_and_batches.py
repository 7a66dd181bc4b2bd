import random

import datasets
import numpy as np
import pytest
import torch

from medfuse_hf import FeatureVocabulary, MedFuseTokenizer
from medfuse_hf.data import (
    LengthGroupedBatchSampler,
    LengthGroupedStream,
    MedFuseDataCollator,
    apply_split,
    clinical_vocabulary,
    load_physionet2012_sample,
    load_split,
    nested_subset,
    padding_fraction,
    save_split,
    seft_split,
    set_a_test_split,
    stratified_split,
    validation_subset,
)
from medfuse_hf.training.cohorts import fit_tokenizer


def test_stratified_split_is_seeded_disjoint_and_keeps_the_label_rate():
    ids, labels = list(range(1000)), [int(i % 7 == 0) for i in range(1000)]
    split = stratified_split(ids, labels, (0.8, 0.1, 0.1), seed=3)
    assert split == stratified_split(ids, labels, (0.8, 0.1, 0.1), seed=3)
    assert split != stratified_split(ids, labels, (0.8, 0.1, 0.1), seed=4)
    assert sorted(sum(split.values(), [])) == ids
    assert [len(part) for part in split.values()] == [800, 100, 100]
    for part in split.values():
        assert sum(labels[i] for i in part) / len(part) == pytest.approx(143 / 1000, abs=0.011)
    # a release read from its archive lists patients otherwise than from its folder: the same seed, the same split
    shuffled = np.random.default_rng(0).permutation(1000).tolist()
    assert stratified_split(shuffled, [labels[i] for i in shuffled], (0.8, 0.1, 0.1), seed=3) == split


def test_a_cohort_too_small_to_stratify_says_what_it_holds_and_the_way_out():
    """A pilot export with one death: scikit-learn's "least populated class" would name no patient count."""
    with pytest.raises(ValueError, match=r"15 patients \(14 of class 0, 1 of class 1\) are too few to split .* "
                                         r"\(--split_file\)"):
        stratified_split(list(range(15)), [0] * 14 + [1])


def test_training_subsets_are_nested_stratified_and_seeded():
    labels = [int(i % 16 == 0) for i in range(3200)]  # 200 positives
    subsets = {fraction: set(nested_subset(labels, fraction, seed=1)) for fraction in (0.01, 0.05, 0.25, 1.0)}
    assert subsets[0.01] <= subsets[0.05] <= subsets[0.25] <= subsets[1.0] == set(range(3200))
    assert len(subsets[0.01]) == 32 and sum(labels[i] for i in subsets[0.01]) == 2
    assert set(nested_subset(labels, 0.05, seed=2)) != subsets[0.05]
    # a class keeps one
    assert 9 in nested_subset([0] * 9 + [1], 0.05) and len(nested_subset([0] * 9 + [1], 0.05)) == 2
    floored = validation_subset(labels, 0.01, seed=1)  # a small hospital's: at least 10 of each class
    assert sum(labels[i] for i in floored) == 10 and len(floored) == 40 and subsets[0.01] <= set(floored)
    with pytest.raises(ValueError, match="fraction"):
        nested_subset(labels, 0.0)


def test_seft_split_reads_the_listfiles(tmp_path):
    header = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"
    for file, ids in (("train_listfile.csv", [1, 2]), ("val_listfile.csv", [3]), ("test_listfile.csv", [4])):
        (tmp_path / file).write_text(header + "".join(f"{i},1,1,1,-1,0\n" for i in ids))
    assert seft_split(tmp_path) == {"train": [1, 2], "validation": [3], "test": [4]}
    (tmp_path / "test_listfile.csv").write_text(header + "2,1,1,1,-1,0\n")
    with pytest.raises(ValueError, match="patient 2 is in both 'train' and 'test'"):
        seft_split(tmp_path)


def test_set_a_test_protocol_and_apply_split(tmp_path):
    dataset = datasets.Dataset.from_dict(
        {"record_id": list(range(40)), "set": ["a"] * 10 + ["b"] * 15 + ["c"] * 15, "in_hospital_death": [0, 1] * 20}
    )
    split = set_a_test_split(dataset, validation_fraction=0.2, seed=0)
    assert set_a_test_split(dataset.select(range(39, -1, -1)), validation_fraction=0.2, seed=0) == split
    assert split["test"] == list(range(10))
    assert len(split["train"]) == 24 and len(split["validation"]) == 6
    save_split(split, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json") == split
    parts = apply_split(dataset, {**split, "test": split["test"] + [999]})
    assert parts["test"]["record_id"] == list(range(10)) and len(parts["train"]) == 24


def test_bundled_sample_trains_a_tokenizer_on_its_train_split():
    sample = load_physionet2012_sample()
    assert len(sample) == 600 and sorted(set(sample["split"])) == ["test", "train", "validation"]
    train = sample.filter(lambda part: part == "train", input_columns="split")
    names = sorted({name for features in train["feature"] for name in features})
    vocabulary = clinical_vocabulary(names).fit_statistics(train)
    assert vocabulary.spec_of("heart_rate").statistics.num_patients > 400
    batch = MedFuseDataCollator(MedFuseTokenizer(vocabulary), label_column="in_hospital_death")(
        list(train.select(range(4))))
    assert batch["feature_ids"].shape[0] == 4 and batch["feature_ids"].shape[1] % 8 == 0
    assert batch["labels"].tolist() == train["in_hospital_death"][:4]


def test_a_feature_missing_from_the_training_subset_is_dropped_at_validation_not_fatal(caplog):
    train = datasets.Dataset.from_dict({"feature": [["heart_rate", "sodium"]] * 3, "value": [[80.0, 140.0]] * 3,
                                        "time": [[0.0, 1.0]] * 3})
    tokenizer = fit_tokenizer(train, max_events=16)
    with caplog.at_level("WARNING"):
        encoded = tokenizer([{"feature": ["heart_rate", "troponin_i"], "value": [85.0, 0.2], "time": [0.0, 2.0]}])
    assert encoded["feature_ids"] == [[tokenizer.feature_vocabulary.id_of("heart_rate")]]
    assert "troponin_i" in caplog.text


@pytest.mark.parametrize("normalization", ["robust_zscore", "quantile"])
def test_a_cohort_of_its_own_names_gets_the_statistics_from_events_fits(normalization):
    """Names outside the clinical catalogue (an unmapped table) take the vocabulary `FeatureVocabulary.from_events`
    builds, fitted patient by patient rather than from every patient held in Python at once."""
    rng = random.Random(0)
    rows = [{"feature": ["bp_sys", "bp_sys", "lab_x"], "value": [rng.gauss(120, 15), rng.gauss(118, 15), rng.random()],
             "time": [0.0, 1.0, 2.0]} for _ in range(50)]
    fitted = fit_tokenizer(datasets.Dataset.from_list(rows), max_events=16, normalization=normalization)
    expected = FeatureVocabulary.from_events(rows, normalization=normalization)
    assert fitted.feature_vocabulary == expected
    assert fitted.feature_vocabulary.spec_of("bp_sys").statistics.count == 100


def test_collator_refuses_unlabeled_patients(tokenizer, cohort):
    rows = [dict(cohort[0], label=None)]
    with pytest.raises(ValueError, match="has no 'label'"):
        MedFuseDataCollator(tokenizer, label_column="label")(rows)


def test_length_grouping_cuts_padding(tokenizer):
    random.seed(0)
    lengths = [random.randint(5, 400) for _ in range(512)]
    patients = [{"feature": ["heart_rate"] * n, "value": [80.0] * n, "time": list(map(float, range(n)))}
                for n in lengths]
    big_tokenizer = MedFuseTokenizer(tokenizer.feature_vocabulary, max_events=512)
    collate = MedFuseDataCollator(big_tokenizer)

    def mean_padding(batches):
        return sum(padding_fraction(collate([patients[i] for i in batch])) for batch in batches) / len(batches)

    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=0)
    grouped = list(sampler)
    assert len(grouped) == len(sampler) == 16
    assert sorted(i for batch in grouped for i in batch) == list(range(512))  # every patient exactly once
    sampler.set_epoch(1)
    assert list(sampler) != grouped  # a new order each epoch
    shuffled = torch.randperm(512, generator=torch.Generator().manual_seed(0)).split(32)
    grouped_padding, shuffled_padding = mean_padding(grouped), mean_padding([batch.tolist() for batch in shuffled])
    assert grouped_padding < 0.15 and shuffled_padding > 0.4, (grouped_padding, shuffled_padding)


def test_small_cohort_left_over_patients_change_each_epoch_and_are_not_the_shortest():
    lengths = list(range(1, 121))  # 120 patients, batch 64: 56 left over each epoch with drop_last
    sampler = LengthGroupedBatchSampler(lengths, batch_size=64, seed=0, drop_last=True)
    seen = set()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        (batch,) = list(sampler)
        assert len(batch) == 64
        seen.update(batch)
    assert seen == set(range(120))  # nobody is left out every epoch (the shortest were, when taken from the order)


def test_a_stream_is_batched_by_length_within_windows_and_loses_no_one():
    """Each `batch_size` consecutive patients of the re-ordered stream are one DataLoader batch: they must be of like
    length (a random streamed batch pads to its longest stay), every patient must come once, and the order must
    follow the seed and change with the epoch. 1,000 patients: 7 windows of 160, then a short last batch, last."""
    generator = random.Random(0)
    patients = [{"id": i, "feature": ["heart_rate"] * generator.randint(1, 1000)} for i in range(1000)]

    class Stream(list):  # stands for a `datasets` stream: iterable, reshuffled by its own `set_epoch`
        def set_epoch(self, epoch):
            self.epoch = epoch

    stream = LengthGroupedStream(Stream(patients), batch_size=16, seed=0, batches_per_window=10)
    first = list(stream)
    assert sorted(patient["id"] for patient in first) == list(range(1000))
    batches = [first[start:start + 16] for start in range(0, 1000, 16)]

    def fill(batch):  # the share of a padded batch's positions that hold an event
        lengths = [len(patient["feature"]) for patient in batch]
        return sum(lengths) / (len(lengths) * max(lengths))

    assert sum(map(fill, batches[:-1])) / 62 > 0.8 > 0.6 > sum(fill(patients[start:start + 16]) for start in
                                                               range(0, 992, 16)) / 62
    assert len(batches[-1]) == 1000 - 62 * 16 and {patient["id"] for patient in batches[-1]} <= {
        patient["id"] for patient in patients[960:]}  # the last window's leftovers, not a window's middle
    assert [patient["id"] for patient in LengthGroupedStream(Stream(patients), 16, seed=0, batches_per_window=10)] \
        == [patient["id"] for patient in first]
    stream.set_epoch(1)
    assert stream.patients.epoch == 1 and [patient["id"] for patient in stream] != [patient["id"] for patient in first]


def test_dataset_card_counts_patients_missingness_and_labels():
    from medfuse_hf.data.dataset_card import describe_cohort, render_dataset_card

    cohort = datasets.Dataset.from_dict({
        "feature": [["heart_rate", "heart_rate", "sodium"], ["heart_rate"], ["heart_rate", "lactate"], ["sodium"]],
        "value": [[80.0, 90.0, 140.0], [70.0], [60.0, 2.0], [130.0]],
        "died": [1, 0, 0, None],
    }).select([0, 1, 2, 3])
    summary = describe_cohort(cohort, "died")
    assert (summary["patients"], summary["events"]) == (4, 7)
    assert summary["features"]["heart_rate"]["patients"] == 3
    assert summary["features"]["heart_rate"]["missing_patients_percent"] == 25.0
    assert summary["features"]["heart_rate"]["observations_per_patient"] == pytest.approx(4 / 3, abs=1e-3)
    assert summary["features"]["sodium"]["median"] == 135.0
    assert summary["label"] == {"column": "died", "positives": 1, "labelled": 3, "rate_percent": 33.33}
    card = render_dataset_card("Toy", "A toy cohort.", {"All": summary})
    assert "| heart_rate | bpm | 3 | 25.0% | 1.3 | 75 |" in card


def test_event_dropout_leaves_events_out_but_never_a_whole_patient(tokenizer, cohort):
    from medfuse_hf.data import MedFuseDataCollator

    plain = MedFuseDataCollator(tokenizer, label_column="label")(cohort[:16])
    dropped = MedFuseDataCollator(tokenizer, label_column="label", event_dropout=0.5,
                                  rng=random.Random(0))(cohort[:16])
    kept, total = dropped["attention_mask"].sum(1), plain["attention_mask"].sum(1)
    assert torch.all(kept >= 1) and torch.all(kept <= total)
    assert 0.3 < kept.sum() / total.sum() < 0.7  # about half the events, per a fair coin
    one_event = [dict(cohort[0], feature=["sodium"], value=[140.0], time=[1.0])]
    assert MedFuseDataCollator(tokenizer, event_dropout=0.99,
                               rng=random.Random(1))(one_event)["attention_mask"].sum() == 1
    with pytest.raises(ValueError, match="event_dropout must lie in"):
        MedFuseDataCollator(tokenizer, event_dropout=1.0)
    # keyed by row: a row loses the same events in any batch (any process's share, a resumed run's), anew each epoch
    rows = [dict(patient, row=index) for index, patient in enumerate(cohort[:16])]
    keyed = MedFuseDataCollator(tokenizer, event_dropout=0.5, row_key="row", seed=3)
    together, alone = keyed(rows)["attention_mask"].sum(1), keyed(rows[8:])["attention_mask"].sum(1)
    assert torch.equal(together[8:], alone)
    keyed.set_epoch(1)
    assert not torch.equal(keyed(rows)["attention_mask"].sum(1), together)
    pinned = MedFuseTokenizer(tokenizer.feature_vocabulary, pinned_features=["icu_type"])
    with_statics = [dict(patient, feature=["icu_type", *patient["feature"]], value=["medical", *patient["value"]],
                         time=[0.0, *patient["time"]]) for patient in cohort[:16]]
    batch = MedFuseDataCollator(pinned, event_dropout=0.9, rng=random.Random(2))(with_statics)
    icu_type = pinned.feature_vocabulary.id_of("icu_type")
    assert ((batch["feature_ids"] == icu_type).sum(1) == 1).all()  # the statics a model reads are never left out
