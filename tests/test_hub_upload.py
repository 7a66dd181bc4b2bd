"""Uploads to the Hub against a local stand-in on 127.0.0.1: the tests never reach the internet.

huggingface_hub asks the Hub's "preupload" route how to send each file; the stand-in answers "regular" for every
file, so contents travel base64-encoded inside the NDJSON commit and no LFS or Xet storage is involved.
"""

import base64
import contextlib
import hashlib
import http.server
import json
import math
import re
import shutil
import threading
from urllib.parse import urlsplit

import huggingface_hub.constants
import pytest
import transformers.utils.hub

from medfuse_hf import FeatureVocabulary, MedFuseConfig, MedFuseForSequenceClassification, MedFuseTokenizer
from medfuse_hf.feature_embeddings import push_feature_embeddings
from medfuse_hf.privacy import HubPrivacyCallback, privacy_guarded, without_exact_prevalence
from medfuse_hf.synthetic import make_sodium_cohort
from medfuse_hf.training.publishing import push_run

TOKEN = "hf_stand_in_token"
REPO_ROUTE = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/main")
RESOLVE_ROUTE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/main/(?P<file>.+)")


class StandInHub(http.server.BaseHTTPRequestHandler):
    """The routes an upload uses: repo creation, README metadata check, preupload, commit, and reading a file back
    (transformers' `push_to_hub` loads the repo's model card first). Anything else is a 404, so a change in the
    client's protocol fails the tests instead of passing unnoticed."""

    def handle_request(self) -> None:
        path = urlsplit(self.path).path
        self.server.requests.append((self.command, path, self.headers.get("Authorization")))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        repos = self.server.repos
        repo_route, resolve_route = REPO_ROUTE.fullmatch(path), RESOLVE_ROUTE.fullmatch(path)
        if self.command == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request['organization']}/{request['name']}"
            status = 409 if repo_id in repos else 200  # the Hub's "already exists", which exist_ok accepts
            repos.setdefault(repo_id, {"visibility": request.get("visibility"), "files": {}, "commits": []})
            self.send_json(status, {"url": f"{self.server.url}/{repo_id}"})
        elif self.command == "POST" and path == "/api/validate-yaml":
            self.send_json(200, {"errors": [], "warnings": []})
        elif self.command == "POST" and repo_route and repo_route["repo"] in repos:
            repo = repos[repo_route["repo"]]
            if repo_route["action"] == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": file["path"], "uploadMode": "regular", "shouldIgnore": False} for file in files]
                self.send_json(200, {"files": modes})
            else:
                self.commit(repo_route["repo"], repo, [json.loads(line) for line in body.splitlines()])
        elif self.command in ("GET", "HEAD") and resolve_route and resolve_route["repo"] in repos:
            self.send_file(repos[resolve_route["repo"]], resolve_route["file"])
        else:
            self.send_error(404)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_request

    def commit(self, repo_id: str, repo: dict, lines: list[dict]) -> None:
        header, operations = lines[0], lines[1:]
        if header["key"] != "header" or any(op["key"] != "file" or op["value"]["encoding"] != "base64"
                                            for op in operations):
            self.send_json(400, {"error": "the stand-in Hub takes only inline base64 files"})
            return
        for op in operations:
            repo["files"][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
        oid = hashlib.sha1(json.dumps(lines).encode()).hexdigest()
        repo["commits"].append(oid)
        self.send_json(200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{oid}", "commitOid": oid})

    def send_file(self, repo: dict, name: str) -> None:
        if name not in repo["files"]:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")  # "no such file", as opposed to "no such route"
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content = repo["files"][name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", repo["commits"][-1])
        self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(content)

    def send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in Hub, with huggingface_hub and transformers pointed at it for the duration of one test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.repos, httpd.requests = {}, []
    # HfApi reads ENDPOINT when it is built; file downloads use the URL template computed from it at import.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", httpd.url)
    template = httpd.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    # The stand-in is local: reach it even where the tests run with HF_HUB_OFFLINE=1, which blocks every request.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # Telemetry would fetch an agent registry from the endpoint once per process, unauthenticated.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # transformers keeps one HfApi for the process, bound to the endpoint it first saw.
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_an_exported_checkpoint_is_uploaded_byte_for_byte_to_a_new_private_repo(hub, source):
    _, _, folder = source
    (folder / "README.md").write_text("---\nlicense: other\n---\n# Feature embeddings\n")  # publish_run adds a card
    commit_url = push_feature_embeddings(folder, "hospital-a/medfuse-embeddings", token=TOKEN)
    repo = hub.repos["hospital-a/medfuse-embeddings"]
    assert repo["visibility"] == "private"
    assert repo["files"] == {file.name: file.read_bytes() for file in folder.iterdir()}
    assert len(repo["commits"]) == 1
    assert commit_url == f"{hub.url}/hospital-a/medfuse-embeddings/commit/{repo['commits'][0]}"
    assert {authorization for *_, authorization in hub.requests} == {f"Bearer {TOKEN}"}


def test_a_run_pushes_its_model_tokenizer_card_and_embeddings(hub, source, tmp_path):
    model, vocabulary, embeddings = source
    tokenizer = MedFuseTokenizer(vocabulary)
    run_dir = tmp_path / "run"  # a finished run as recipes/publish.py --push_to_hub finds it
    (run_dir / "model").mkdir(parents=True)
    card = ("---\nlicense: cc-by-4.0\nlibrary_name: transformers\n---\n\n# MedFuse, hospital A\n\n"
            "Not a medical device.\n")
    (run_dir / "model" / "README.md").write_text(card)
    shutil.copytree(embeddings, run_dir / "feature_embeddings")
    model.config.class_weights, model.config.logit_offsets = [0.6, 3.0], [0.510826, -1.098612]  # 1 in 6 positive
    push_run(run_dir, model, tokenizer, "hospital-a/medfuse", train_patients=250, token=TOKEN)
    assert model.config.class_weights == [0.6, 3.0]  # kept for training here
    assert model.config.logit_offsets == [0.510826, -1.098612]
    local = tmp_path / "local"
    # as pushed: the offsets of 40 positives in 250, the 41.7 of a sixth rounded to tens
    model.config.class_weights, model.config.logit_offsets = None, [math.log(2 * 0.84), math.log(2 * 0.16)]
    model.save_pretrained(local)
    MedFuseTokenizer(privacy_guarded(vocabulary)[0]).save_pretrained(local)  # counts rounded to tens
    repo = hub.repos["hospital-a/medfuse"]
    assert repo["visibility"] == "private"
    uploaded = {name: content for name, content in repo["files"].items() if name != "README.md"}
    assert uploaded == {file.name: file.read_bytes() for file in local.iterdir()}  # transformers' own files
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= uploaded.keys()
    assert json.loads(uploaded["config.json"])["class_weights"] is None  # they give the positive count away
    assert repo["files"]["README.md"].decode() == card  # the run's card, not the stub transformers writes
    tokenizer.save_pretrained(tmp_path / "exact")
    # exact counts stay home
    assert ((tmp_path / "exact" / "preprocessor_config.json").read_bytes()
            != uploaded["preprocessor_config.json"])
    published = hub.repos["hospital-a/medfuse-embeddings"]["files"]
    assert published == {file.name: file.read_bytes() for file in (run_dir / "feature_embeddings").iterdir()}


def test_a_tokenizer_holding_a_rare_features_statistics_is_refused_before_any_upload(hub, source, tmp_path):
    model, _, _ = source
    patients = make_sodium_cohort(40, seed=1)
    for patient in patients[:3]:  # a lab seen in 3 patients: its quartiles are nearly their values
        patient.update(feature=[*patient["feature"], "rare_lab"], value=[*patient["value"], 123.456],
                       time=[*patient["time"], 1.0])
    tokenizer = MedFuseTokenizer(FeatureVocabulary.from_events(patients))
    with pytest.raises(ValueError, match="refusing to push hospital-a/medfuse: its tokenizer normalises rare_lab"):
        push_run(tmp_path, model, tokenizer, "hospital-a/medfuse", train_patients=40, token=TOKEN)
    assert hub.requests == []


def test_a_folder_that_is_not_an_exported_checkpoint_is_refused_before_any_request(hub, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights, but no embedding_config.json")
    with pytest.raises(FileNotFoundError,
                       match="no embedding_config.json; export the checkpoint with export_feature_embeddings"):
        push_feature_embeddings(folder, "hospital-a/medfuse-embeddings", token=TOKEN)
    assert hub.requests == []


def rare_feature_tokenizer() -> MedFuseTokenizer:
    patients = make_sodium_cohort(40, seed=1)
    for patient in patients[:3]:  # a lab seen in 3 patients: its quartiles are nearly their values
        patient.update(feature=[*patient["feature"], "rare_lab"], value=[*patient["value"], 123.456],
                       time=[*patient["time"], 1.0])
    return MedFuseTokenizer(FeatureVocabulary.from_events(patients))


def small_model(tokenizer: MedFuseTokenizer, **config) -> MedFuseForSequenceClassification:
    return MedFuseForSequenceClassification(MedFuseConfig(
        **tokenizer.feature_vocabulary.config_kwargs(), hidden_size=8, value_embedding_size=4,
        value_projector_hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8, **config))


def labelled_stays(tokenizer: MedFuseTokenizer):
    """Sixteen tokenized stays with their labels: a Trainer's training set."""
    import datasets

    raw = datasets.Dataset.from_list(make_sodium_cohort(16, seed=3))
    tokenized = raw.map(lambda batch: tokenizer(batch, padding=False), batched=True, remove_columns=raw.column_names)
    return tokenized.add_column("labels", raw["label"])


def trainer_push(tokenizer: MedFuseTokenizer, repo_id: str, output_dir, while_training: bool, model=None,
                 rounded_for: int | None = None, collator_only: bool = False) -> None:
    """`Trainer.push_to_hub` with the tokenizer as processing class (or, `collator_only`, in the data collator
    alone), under `HubPrivacyCallback`; or, while training, `push_to_hub=True` with every checkpoint uploaded
    (`hub_strategy="checkpoint"`), then the final push; the final push inside `without_exact_prevalence(model,
    rounded_for)` when that is given."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    pushing = ({"push_to_hub": True, "hub_strategy": "checkpoint", "max_steps": 1, "save_steps": 1}
               if while_training else {})
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none", hub_model_id=repo_id,
                             hub_token=TOKEN, per_device_train_batch_size=8, **pushing)
    trainer = Trainer(model or small_model(tokenizer), args, train_dataset=labelled_stays(tokenizer),
                      data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=None if collator_only else tokenizer,
                      callbacks=[HubPrivacyCallback()])
    if while_training:
        trainer.train()
    with without_exact_prevalence(trainer.model, rounded_for) if rounded_for else contextlib.nullcontext():
        trainer.push_to_hub()


UPLOADS = ["push_to_hub", "save_pretrained", "Trainer.push_to_hub", "Trainer(push_to_hub=True).train"]
COLLATOR_ONLY = "Trainer(push_to_hub=True, tokenizer in the data collator only).train"


@pytest.mark.parametrize("upload", [*UPLOADS, COLLATOR_ONLY])
def test_every_tokenizer_upload_path_is_guarded(hub, tmp_path, upload):
    """transformers' own upload paths of the tokenizer: counts rounded to tens, a rare feature refused."""
    def push(tokenizer, repo_id):
        if upload == "push_to_hub":
            tokenizer.push_to_hub(repo_id, token=TOKEN)
        elif upload == "save_pretrained":
            tokenizer.save_pretrained(tmp_path / repo_id.split("/")[1], push_to_hub=True, repo_id=repo_id, token=TOKEN)
        else:
            trainer_push(tokenizer, repo_id, tmp_path / repo_id.split("/")[1], while_training=upload.endswith("train"),
                         collator_only=upload == COLLATOR_ONLY)

    cohort = make_sodium_cohort(57, seed=2)
    common, exact = (MedFuseTokenizer(FeatureVocabulary.from_events(cohort)) for _ in range(2))
    push(common, "hospital-a/tokenizer")
    uploaded = json.loads(hub.repos["hospital-a/tokenizer"]["files"]["preprocessor_config.json"])["feature_vocabulary"]
    assert [feature["statistics"]["num_patients"] for feature in uploaded["features"]] == [50, 50, 50]  # 57, rounded
    assert FeatureVocabulary.from_dict(uploaded) == privacy_guarded(common.feature_vocabulary)[0]
    if upload.endswith("train"):  # the checkpoint uploaded while training, too
        checkpoint = hub.repos["hospital-a/tokenizer"]["files"]["last-checkpoint/preprocessor_config.json"]
        checkpoint = json.loads(checkpoint)["feature_vocabulary"]
        assert [feature["statistics"]["num_patients"] for feature in checkpoint["features"]] == [50, 50, 50]
    if upload.startswith("Trainer"):  # the Trainer saves this very object: guarded in place, encoding unchanged
        assert common.feature_vocabulary == privacy_guarded(exact.feature_vocabulary)[0]
        assert (common(cohort, return_tensors="np")["values"].tolist()
                == exact(cohort, return_tensors="np")["values"].tolist())
    else:
        assert common.feature_vocabulary.spec_of("sodium").statistics.num_patients == 57  # the exact copy stays here

    requests = len(hub.requests)
    with pytest.raises(ValueError, match="refusing to push hospital-a/rare: its tokenizer normalises rare_lab"):
        push(rare_feature_tokenizer(), "hospital-a/rare")
    if upload.endswith("train"):  # the Trainer creates the repo when it is built; training is refused before a file
        assert hub.repos["hospital-a/rare"]["files"] == {}
    else:
        assert len(hub.requests) == requests and "hospital-a/rare" not in hub.repos  # refused before any request


def test_a_trainer_that_keeps_its_tokenizer_in_the_collator_alone_is_refused_a_push_before_training(hub, tmp_path):
    """Without a processing class the Trainer uploads its data collator's tokenizer, which a callback reaches only
    through the training loader: before any training there is none, so the push is refused, not sent unguarded."""
    tokenizer = MedFuseTokenizer(FeatureVocabulary.from_events(make_sodium_cohort(57, seed=2)))
    with pytest.raises(ValueError, match="refusing to push hospital-a/untrained: a Trainer without processing_class"):
        trainer_push(tokenizer, "hospital-a/untrained", tmp_path / "untrained", while_training=False,
                     collator_only=True)
    assert not hub.repos.get("hospital-a/untrained", {}).get("files")
    assert tokenizer.feature_vocabulary.spec_of("sodium").statistics.num_patients == 57


def test_published_logit_offsets_give_the_positive_count_only_to_tens():
    """Offsets log(2(1 − r)) and log(2r) rounded to two decimals gave 10, 33 or 80 positives back exactly, with the
    training cohort's size on the card."""
    from medfuse_hf.privacy import rounded_prevalence_offsets

    def offsets(positives: int, patients: int) -> list[float]:
        share = positives / patients
        return [math.log(2 * (1 - share)), math.log(2 * share)]

    for patients in (240, 800, 2400, 9600):
        published = {tuple(rounded_prevalence_offsets(offsets(count, patients), patients)) for count in range(26, 35)}
        assert published == {tuple(offsets(30, patients))}  # 26 to 34 positives all read as 30
    assert rounded_prevalence_offsets(offsets(3, 77), 77) == pytest.approx(offsets(10, 77))  # never below ten
    with pytest.raises(ValueError, match="12 training patients: too few"):
        rounded_prevalence_offsets(offsets(3, 12), 12)


@pytest.mark.parametrize("upload", [*UPLOADS, "config.push_to_hub"])
def test_every_model_upload_path_refuses_the_training_cohorts_exact_positive_count(hub, tmp_path, upload):
    """A fine-tuned config's class weights and logit offsets give the positive count exactly: transformers' own
    upload paths refuse them before any file is sent, and send them rounded inside `without_exact_prevalence`."""
    tokenizer = MedFuseTokenizer(privacy_guarded(FeatureVocabulary.from_events(make_sodium_cohort(57, seed=2)))[0])
    exact = {"class_weights": [0.6, 3.0], "logit_offsets": [0.510826, -1.098612]}  # 1 in 6 positive

    def push(model, repo_id, rounded_for=None):
        with (without_exact_prevalence(model, rounded_for) if rounded_for and not upload.startswith("Trainer")
              else contextlib.nullcontext()):
            if upload == "push_to_hub":
                model.push_to_hub(repo_id, token=TOKEN)
            elif upload == "config.push_to_hub":
                model.config.push_to_hub(repo_id, token=TOKEN)
            elif upload == "save_pretrained":
                model.save_pretrained(tmp_path / repo_id.split("/")[1], push_to_hub=True, repo_id=repo_id,
                                      token=TOKEN)
            else:
                trainer_push(tokenizer, repo_id, tmp_path / repo_id.split("/")[1], upload.endswith("train"), model,
                             rounded_for)

    refusal = ("refusing to push hospital-a/exact: its config's class_weights and logit_offsets give the training "
               "cohort's exact positive count")
    refusal += ".*Training with push_to_hub=True" if upload.endswith("train") else ""
    with pytest.raises(ValueError, match=refusal):
        push(small_model(tokenizer, **exact), "hospital-a/exact")
    assert not hub.repos.get("hospital-a/exact", {}).get("files")  # the Trainer creates its repo when it is built
    if upload.endswith("train"):  # checkpoints go up during training, with the weights its loss needs
        return
    model = small_model(tokenizer, **exact)
    push(model, "hospital-a/rounded", rounded_for=250)
    uploaded = json.loads(hub.repos["hospital-a/rounded"]["files"]["config.json"])
    assert uploaded["class_weights"] is None
    assert uploaded["logit_offsets"] == pytest.approx([math.log(2 * 0.84), math.log(2 * 0.16)])  # 40 of 250
    assert {name: getattr(model.config, name) for name in exact} == exact  # kept here, for training
    with pytest.raises(ValueError, match="refusing to push hospital-a/again"):  # rounded for that upload only
        push(model, "hospital-a/again")
    push(small_model(tokenizer), "hospital-a/unweighted")  # nothing to give away: pushed as it is
    assert "config.json" in hub.repos["hospital-a/unweighted"]["files"]


def test_rounding_the_prevalence_for_an_upload_never_leaves_the_model_changed():
    """Nested blocks keep the rounding to the outer one's end; a block refused on entry (too few patients to round
    a count to tens) leaves the class weights the loss reads at every step."""
    from medfuse_hf.privacy import refuse_exact_prevalence

    tokenizer = MedFuseTokenizer(FeatureVocabulary.from_events(make_sodium_cohort(30, seed=2)))
    exact = {"class_weights": [0.6, 3.0], "logit_offsets": [0.510826, -1.098612]}
    model = small_model(tokenizer, **exact)
    with without_exact_prevalence(model, 250):
        with without_exact_prevalence(model, 250):
            refuse_exact_prevalence(model.config, "inner")
        refuse_exact_prevalence(model.config, "outer, after the inner block")  # still rounded: no refusal
        assert model.config.class_weights is None
    assert {name: getattr(model.config, name) for name in exact} == exact
    with pytest.raises(ValueError, match="12 training patients: too few"):
        with without_exact_prevalence(model, 12):
            pass
    assert {name: getattr(model.config, name) for name in exact} == exact
    with pytest.raises(ValueError, match="refusing to push after"):
        refuse_exact_prevalence(model.config, "after")


def test_under_model_init_the_guard_reads_the_model_train_built(hub, tmp_path):
    """With `model_init`, `train` builds the model again: the callbacks are given that one (transformers updates
    their reference as training starts), so the block's rounding reaches the guard and the exact twin never does."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = MedFuseTokenizer(privacy_guarded(FeatureVocabulary.from_events(make_sodium_cohort(57, seed=2)))[0])
    args = TrainingArguments(output_dir=str(tmp_path / "init"), use_cpu=True, report_to="none", max_steps=1,
                             hub_model_id="hospital-a/init", hub_token=TOKEN, per_device_train_batch_size=8)
    trainer = Trainer(args=args, model_init=lambda: small_model(tokenizer, class_weights=[0.6, 3.0]),
                      train_dataset=labelled_stays(tokenizer), data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=tokenizer, callbacks=[HubPrivacyCallback()])
    built_first = trainer.model
    trainer.train()
    assert trainer.model is not built_first
    with pytest.raises(ValueError, match="refusing to push hospital-a/init"):
        trainer.push_to_hub()
    with without_exact_prevalence(trainer.model, 250):
        trainer.push_to_hub()
    assert json.loads(hub.repos["hospital-a/init"]["files"]["config.json"])["class_weights"] is None
